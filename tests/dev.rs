//! `dohost dev`: builds, serves and deploys a project, prints its requests and log lines, builds
//! and deploys again on every saved change, keeps the last good version through a failed build,
//! and stops on Ctrl-C. The project here is a build command that copies a ready component, chosen
//! by a file the test edits: what is tested is the loop, not the compiler.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The next printed line `wanted` accepts, within 60 s (a build may take a while).
fn expect_line(lines: &PrintedLines, wanted: impl Fn(&str) -> bool) -> String {
    lines.next(Duration::from_secs(60), wanted).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_builds_serves_and_deploys_again_on_every_change() {
    let project = tempfile::tempdir().unwrap();
    let choose = |guest: &str| {
        let wasm = wasm(guest);
        std::fs::write(project.path().join("choice.txt"), wasm.to_str().unwrap()).unwrap();
    };
    choose("counter");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dohost"))
        .arg("dev")
        .arg(project.path())
        .args([
            "--build",
            r#"cp "$(cat choice.txt)" out.wasm"#,
            "--wasm",
            "out.wasm",
        ])
        .args(["--name", "app", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = PrintedLines::stdout_of(&mut child);
    let listening = expect_line(&lines, |l| l.starts_with("listening on "));
    let url = listening
        .trim_start_matches("listening on ")
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    expect_line(&lines, |l| l.contains("as app, version 1"));
    let http = client();
    let serves = || async {
        let r = http.get(format!("{url}/app/x/identity")).send().await;
        assert_eq!(r.unwrap().status(), 200);
    };

    // Served, and each request printed.
    let (status, body) = json(http.post(format!("{url}/app/x/"))).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)));
    expect_line(&lines, |l| {
        l.contains("app/x") && l.contains("POST /app/x/ 200")
    });

    // A saved change builds and deploys again.
    choose("test_object");
    expect_line(&lines, |l| l.contains("as app, version 2"));
    serves().await;
    // The guests' log lines are printed beside the requests.
    http.post(format!("{url}/app/x/log"))
        .body("hello from the guest")
        .send()
        .await
        .unwrap();
    expect_line(&lines, |l| l.contains("hello from the guest"));

    // A failed build is shown; the last good version serves on.
    std::fs::write(project.path().join("choice.txt"), "/no/such/component.wasm").unwrap();
    expect_line(&lines, |l| l.contains("build failed"));
    serves().await;

    // Ctrl-C stops it.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    expect_line(&lines, |l| l == "stopping");
    let until = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "dohost dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exited.success(), "{exited}");
    assert!(
        http.get(format!("{url}/app/x/identity"))
            .send()
            .await
            .is_err()
    );
}
