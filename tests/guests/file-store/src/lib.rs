//! A test object holding one file in chunks, for `files-front`: `PUT /chunk/{i}` stores the body
//! as the value `chunk/{i:08}`, `GET /chunk/{i}` answers it, `PUT /done?chunks=N&bytes=B`
//! records the file's size, answered as `{"chunks": N, "bytes": B}`, which `GET /meta` answers
//! later (404 before).

use dohost_sdk::{DurableObject, Request, Response, Result, State};
use serde_json::{Value, json};

struct FileStore {
    state: State,
}

impl DurableObject for FileStore {
    fn new(state: State) -> Self {
        FileStore { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        let segments: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            ("PUT", ["chunk", i]) => {
                storage.put_bytes(&chunk_key(i)?, req.body())?;
                Ok(Response::empty())
            }
            ("GET", ["chunk", i]) => Ok(match storage.get_bytes(&chunk_key(i)?)? {
                Some(bytes) => Response::from_bytes(bytes),
                None => Response::error(format!("no chunk {i}"), 404),
            }),
            ("PUT", ["done"]) => {
                let number = |name| -> Result<u64> {
                    let value = req.query_param(name).ok_or(format!("missing ?{name}="))?;
                    Ok(value.parse().map_err(|_| format!("bad {name}"))?)
                };
                let meta = json!({ "chunks": number("chunks")?, "bytes": number("bytes")? });
                storage.put("meta", &meta)?;
                Response::from_json(&meta)
            }
            ("GET", ["meta"]) => match storage.get::<Value>("meta")? {
                Some(meta) => Response::from_json(&meta),
                None => Ok(Response::error("no such file", 404)),
            },
            _ => Ok(Response::error("file-store: no such route", 404)),
        }
    }
}

/// The key of chunk `i`: zero-padded, so that the chunks list in order.
fn chunk_key(i: &str) -> Result<String> {
    let i: u64 = i.parse().map_err(|_| format!("bad chunk number {i:?}"))?;
    Ok(format!("chunk/{i:08}"))
}

dohost_sdk::durable_object!(FileStore);
