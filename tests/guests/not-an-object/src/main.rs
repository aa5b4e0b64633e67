//! A WASI command: a valid component of the wrong world, which deploy must refuse.

fn main() {
    println!("hello");
}
