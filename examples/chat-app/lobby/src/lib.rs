//! The lobby of the chat app (`examples/chat-app/dohost.toml`): one object, `lobby`, that keeps
//! the list of rooms and how many are in each. The rooms tell it themselves, through a stub, each
//! time someone joins or leaves; the worker asks it for the list.
//!
//! - `PUT /rooms` with `{"room": NAME, "members": N}`: records the room's count;
//! - `GET /rooms`: `[{"room": NAME, "members": N}, ...]`, by name.
//!
//! Each room is stored under `room:{NAME}`.

use dohost_sdk::{DurableObject, ListOptions, Request, Response, Result, State};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Room {
    room: String,
    members: u64,
}

struct Lobby {
    state: State,
}

impl DurableObject for Lobby {
    fn new(state: State) -> Self {
        Lobby { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        match (req.method(), req.path()) {
            ("PUT", "/rooms") => {
                let room: Room = req.json()?;
                storage.put(&format!("room:{}", room.room), &room.members)?;
                Ok(Response::empty())
            }
            ("GET", "/rooms") => {
                let rooms: Vec<Room> = storage
                    .list::<u64>(ListOptions::new().prefix("room:"))?
                    .into_iter()
                    .map(|(key, members)| Room {
                        room: key["room:".len()..].to_owned(),
                        members,
                    })
                    .collect();
                Response::from_json(&rooms)
            }
            _ => Ok(Response::error("not found", 404)),
        }
    }
}

dohost_sdk::durable_object!(Lobby);
