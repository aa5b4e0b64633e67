//! A real browser against the cursors example: two headless Chromium pages on the same room,
//! driven through chromedriver (WebDriver). Moving the mouse in one page must draw that peer's
//! cursor, near the same point, in the other. Screenshots of both pages are saved to
//! `target/test-output/cursors-a.png` and `cursors-b.png`. And an `EventSource` against the
//! pubsub example: the page shows every published event, across the room's hibernation.
//!
//! Needs Debian's `chromium` and `chromium-driver`; `bash scripts/test` installs them.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::Host;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Bound on any one WebDriver command.
const COMMAND: Duration = Duration::from_secs(30);

/// A chromedriver process in its own process group; the group (chromedriver and the browsers it
/// started) is killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: run the tests with `bash scripts/test`, which installs \
                 Debian's chromium and chromium-driver"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        use std::os::unix::process::CommandExt;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    /// A new headless Chromium session with its own fresh profile in `profile`.
    async fn session(&self, profile: &Path) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=900,700",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connect = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await;
        match connect {
            Ok(client) => client,
            Err(e) => panic!("could not start a Chromium session through chromedriver: {e}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one WebDriver command with a bound.
async fn bounded<T, E: std::fmt::Debug>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(COMMAND, f).await {
        Err(_) => panic!("WebDriver: {what} took over {COMMAND:?}"),
        Ok(Err(e)) => panic!("WebDriver: {what} failed: {e:?}"),
        Ok(Ok(v)) => v,
    }
}

/// Waits (at most 15 s) until the page shows its own name in `#me`; returns the name and the
/// page's own id from `#me[data-id]`, if the page exposes it.
async fn wait_for_me(page: &Client, which: &str) -> (String, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Ok(me)) = tokio::time::timeout(COMMAND, page.find(Locator::Css("#me"))).await {
            let text = bounded("read #me", me.text()).await;
            if !text.trim().is_empty() {
                let id = bounded("read #me[data-id]", me.attr("data-id")).await;
                return (text.trim().to_owned(), id.filter(|s| !s.is_empty()));
            }
        }
        assert!(
            Instant::now() < deadline,
            "page {which} did not show its name in #me within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `.cursor` of `peer` (or, with `None`, the first one) inside `#cursors` on `page`:
/// `{peer, left, top, count}`, or null.
async fn cursor(page: &Client, peer: Option<&str>) -> Value {
    let script = r#"
        const peer = arguments[0];
        const all = [...document.querySelectorAll('#cursors .cursor')];
        const el = peer === null ? all[0] : all.find(e => e.dataset.peer === peer);
        if (!el) return null;
        const style = getComputedStyle(el);
        return {
            peer: el.dataset.peer ?? null,
            left: parseFloat(el.style.left || style.left),
            top: parseFloat(el.style.top || style.top),
            count: all.length,
        };
    "#;
    bounded("query the cursors", page.execute(script, vec![json!(peer)])).await
}

async fn move_to(page: &Client, points: &[(f64, f64)]) {
    let mut mouse = MouseActions::new("mouse".into());
    for &(x, y) in points {
        mouse = mouse
            .then(PointerAction::MoveTo {
                duration: Some(Duration::from_millis(50)),
                x,
                y,
            })
            .pause(Duration::from_millis(30));
    }
    bounded("move the mouse", page.perform_actions(mouse)).await;
}

fn output_dir() -> PathBuf {
    let dir = support::target_dir().join("test-output");
    std::fs::create_dir_all(&dir).expect("create target/test-output");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_mouse_in_one_page_draws_a_cursor_in_the_other() {
    let driver = tokio::task::block_in_place(Driver::start);
    let (host, _dir) = Host::start(&[]);
    host.deploy("cursors", "cursors").await;
    let profiles = tempfile::tempdir().unwrap();
    let room = host.at("/cursors/browser-room/");

    let a = driver.session(&profiles.path().join("a")).await;
    let b = driver.session(&profiles.path().join("b")).await;
    bounded("open page A", a.goto(&room)).await;
    bounded("open page B", b.goto(&room)).await;
    let (a_name, a_id) = wait_for_me(&a, "A").await;
    let (b_name, _) = wait_for_me(&b, "B").await;
    eprintln!("page A is {a_name:?} (id {a_id:?}), page B is {b_name:?}");

    // Move through a few points, ending at `target`; keep nudging around the target (pages may
    // throttle moves) until B draws A's cursor there.
    move_to(&a, &[(100.0, 100.0), (200.0, 150.0), (260.0, 190.0)]).await;
    let target = (320.0, 240.0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut nudge = 0.0;
    let seen = loop {
        move_to(&a, &[(target.0 + nudge, target.1 + nudge)]).await;
        nudge = 1.0 - nudge;
        let last = cursor(&b, a_id.as_deref()).await;
        if let (Some(left), Some(top)) = (last["left"].as_f64(), last["top"].as_f64())
            && (left - target.0).abs() <= 30.0
            && (top - target.1).abs() <= 30.0
        {
            break last;
        }
        if Instant::now() > deadline {
            let a_png = bounded("screenshot A", a.screenshot()).await;
            let b_png = bounded("screenshot B", b.screenshot()).await;
            let dir = output_dir();
            std::fs::write(dir.join("cursors-a.png"), a_png).unwrap();
            std::fs::write(dir.join("cursors-b.png"), b_png).unwrap();
            panic!(
                "page B never drew A's cursor near {target:?} within 15 s; last seen: {last} \
                 (screenshots in {})",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some(id) = &a_id {
        assert_eq!(seen["peer"], json!(id), "{seen}");
    }
    assert_eq!(seen["count"], 1, "only A's cursor is drawn in B: {seen}");

    // A does not draw itself.
    if let Some(id) = &a_id {
        assert_eq!(
            cursor(&a, Some(id)).await,
            Value::Null,
            "page A drew its own cursor"
        );
    }

    // And the other way round, found by B's own id.
    let (_, b_id) = wait_for_me(&b, "B").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut nudge = 0.0;
    loop {
        move_to(&b, &[(150.0 + nudge, 300.0 + nudge)]).await;
        nudge = 1.0 - nudge;
        let seen = cursor(&a, b_id.as_deref()).await;
        if let (Some(left), Some(top)) = (seen["left"].as_f64(), seen["top"].as_f64())
            && (left - 150.0).abs() <= 30.0
            && (top - 300.0).abs() <= 30.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "page A never drew B's cursor near (150, 300) within 15 s; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B's cursor in A did not disturb A's in B.
    let still = cursor(&b, a_id.as_deref()).await;
    assert!(
        still["left"].as_f64().is_some(),
        "A's cursor left B: {still}"
    );

    let dir = output_dir();
    let a_png = bounded("screenshot A", a.screenshot()).await;
    let b_png = bounded("screenshot B", b.screenshot()).await;
    assert!(a_png.starts_with(b"\x89PNG") && b_png.starts_with(b"\x89PNG"));
    std::fs::write(dir.join("cursors-a.png"), a_png).unwrap();
    std::fs::write(dir.join("cursors-b.png"), b_png).unwrap();

    // Closing A's page makes its cursor leave B.
    bounded("close page A", a.close()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while cursor(&b, a_id.as_deref()).await != Value::Null {
        assert!(
            Instant::now() < deadline,
            "A's cursor is still drawn in B 10 s after A closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bounded("close page B", b.close()).await;
}

/// The events `#events` shows on `page`, as `[id, text]`.
async fn shown_events(page: &Client) -> Value {
    let script = r#"
        return [...document.querySelectorAll('#events li')]
            .map(li => [li.dataset.id, li.textContent]);
    "#;
    bounded("read the events", page.execute(script, vec![])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_in_the_browser_receives_published_events_across_hibernation() {
    let driver = tokio::task::block_in_place(Driver::start);
    let (host, _dir) = Host::start(&["--idle-timeout", "1"]);
    host.deploy("pubsub", "pubsub").await;
    let profiles = tempfile::tempdir().unwrap();
    let page = driver.session(&profiles.path().join("p")).await;
    bounded(
        "open the page",
        page.goto(&host.at("/pubsub/browser-room/")),
    )
    .await;
    // The page has subscribed once the room counts it.
    let c = support::client();
    let subscribed = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, seen) = support::json(c.get(host.at("/pubsub/browser-room/subscribers"))).await;
        if seen["subscribers"] == 1 {
            break;
        }
        assert!(
            Instant::now() < subscribed,
            "the page never subscribed: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let publish = async |text: &str| {
        let r = c
            .post(host.at("/pubsub/browser-room/publish"))
            .body(text.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    publish("one").await;
    publish("two").await;
    // The room sleeps; the host keeps the page's stream.
    host.wait_hibernated().await;
    publish("three").await;
    let expected = json!([["1", "one"], ["2", "two"], ["3", "three"]]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = shown_events(&page).await;
        if shown == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page shows {shown}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bounded("close the page", page.close()).await;
}

/// Runs `script` on `page` until it returns something other than `null`, at most 15 s.
async fn until_shown(page: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = bounded(what, page.execute(script, vec![])).await;
        if !value.is_null() {
            return value;
        }
        assert!(Instant::now() < deadline, "the page never showed {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The admin page: a wrong token is refused; the right one, kept only in the tab's session
/// storage, shows the namespaces, a namespace's objects, an object's keys and values (text and
/// JSON as such, binary as hex), its alarm and sockets, and the live request rate. A screenshot
/// is saved to `target/test-output/admin-page.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_namespaces_objects_keys_alarms_sockets_and_rates() {
    let driver = tokio::task::block_in_place(Driver::start);
    let (host, _dir) = Host::start(&[]);
    host.deploy("t", "test_object").await;
    let put = |k: &str, v: &str| json!({"op": "put", "key": k, "value": v});
    let (status, _) = support::ops(
        &host,
        "t",
        "shown",
        json!([put("plain", "hello"), put("doc", r#"{"a":1}"#)]),
    )
    .await;
    assert_eq!(status, 200);
    let c = support::client();
    let binary = c
        .put(host.at("/_admin/namespaces/t/objects/shown/storage/bin"))
        .bearer_auth(support::TOKEN)
        .body(vec![0xff, 0x00, 0x7f])
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), 204);
    let far = support::now_ms() + 3_600_000;
    let r = c
        .post(host.at(&format!("/t/shown/alarm/set?at={far}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _socket = support::ws_connect(&host.ws("/t/shown/ws?tags=room-1")).await;

    let profiles = tempfile::tempdir().unwrap();
    let page = driver.session(&profiles.path().join("admin")).await;
    bounded("open the page", page.goto(&host.at("/_admin/"))).await;
    let sign_in = |token: &str| {
        format!(
            "document.getElementById('token').value = {token:?};
             document.getElementById('login').requestSubmit(); return null;"
        )
    };
    bounded("a wrong token", page.execute(&sign_in("wrong"), vec![])).await;
    let refused = until_shown(
        &page,
        "the refusal",
        "const e = document.getElementById('login-error').textContent; return e || null;",
    )
    .await;
    assert!(refused.as_str().unwrap().contains("refused"), "{refused}");
    bounded("the token", page.execute(&sign_in(support::TOKEN), vec![])).await;

    until_shown(
        &page,
        "the namespace",
        "const li = document.querySelector('li[data-namespace=\"t\"]');
         if (!li) return null; li.click(); return true;",
    )
    .await;
    until_shown(
        &page,
        "the object",
        "const tr = document.querySelector('tr[data-object=\"shown\"]');
         if (!tr) return null; tr.click(); return true;",
    )
    .await;
    let entries = until_shown(
        &page,
        "the keys",
        "const rows = [...document.querySelectorAll('#entries tr')];
         if (rows.length < 3) return null;
         return Object.fromEntries(rows.map(r => [r.dataset.key, r.children[1].textContent]));",
    )
    .await;
    assert_eq!(entries["plain"], "hello");
    assert!(
        entries["doc"].as_str().unwrap().contains("\"a\": 1"),
        "{entries}"
    );
    assert_eq!(entries["bin"], "ff 00 7f  (binary)");
    let info = until_shown(
        &page,
        "the alarm and sockets",
        "const a = document.getElementById('alarm'), s = document.getElementById('sockets');
         return a && s ? [a.textContent, s.textContent] : null;",
    )
    .await;
    assert!(info[0].as_str().unwrap().starts_with("alarm: 20"), "{info}");
    assert_eq!(info[1], "sockets: 1 (room-1)");

    // Requests while the page watches: the rate moves off zero.
    for _ in 0..20 {
        c.get(host.at("/t/other/identity")).send().await.unwrap();
    }
    let rate = until_shown(
        &page,
        "a request rate",
        "const r = Number(document.getElementById('rate').textContent);
         return r > 0 ? r : null;",
    )
    .await;
    assert!(rate.as_f64().unwrap() > 0.0);

    let stored = bounded(
        "where the token is",
        page.execute(
            "return [sessionStorage.getItem('dohost-admin-token'), localStorage.length];",
            vec![],
        ),
    )
    .await;
    assert_eq!(stored, json!([support::TOKEN, 0]));
    let png = bounded("screenshot", page.screenshot()).await;
    assert!(png.starts_with(b"\x89PNG"));
    std::fs::write(output_dir().join("admin-page.png"), png).unwrap();
    bounded("close the page", page.close()).await;
}
