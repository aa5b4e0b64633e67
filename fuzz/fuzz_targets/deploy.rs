//! Component validation on deploy: arbitrary bytes (and mutations of real components, from the
//! corpus) are accepted or refused with a clear error, never a panic.
#![no_main]

use dohost::config::EventLimits;
use dohost::memory::MemoryBudget;
use dohost::registry::{DeployError, validate};
use dohost::runtime::{Role, Runtime};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    // One instance slot is enough: validation compiles and links, it never instantiates.
    RUNTIME.get_or_init(|| {
        let memory = Arc::new(MemoryBudget::new(usize::MAX));
        Runtime::new(EventLimits::default(), 1, memory).expect("the engine starts")
    })
}

fuzz_target!(|bytes: &[u8]| {
    match validate(runtime(), bytes, Role::Object) {
        Ok(_) => assert!(bytes.starts_with(b"\0asm")),
        Err(e) => {
            assert!(
                e.is_client_error(),
                "a bad upload is the uploader's fault: {e}"
            );
            assert!(!e.to_string().is_empty());
            match e {
                DeployError::NotWasm => {
                    assert!(bytes.len() < 8 || !bytes.starts_with(b"\0asm"))
                }
                DeployError::CoreModule => assert_eq!(bytes[4..8], [1, 0, 0, 0]),
                DeployError::Invalid(_) | DeployError::WrongWorld(_) => {}
                DeployError::Namespace(_) | DeployError::Db(_) => {
                    panic!("validation touched a name or the database: {e}")
                }
            }
        }
    }
});
