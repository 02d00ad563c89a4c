//! `moq-clock local` end to end through the binary: a quay WebTransport relay, a moq-net
//! publisher of the time and a subscriber, in one process on loopback.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const MOQ_CLOCK: &str = env!("CARGO_BIN_EXE_moq-clock");
/// How long the program may take for two ticks, a second apart, and its set-up.
const RUN_LIMIT: Duration = Duration::from_secs(30);

#[test]
fn moq_clock_prints_ticks_relayed_over_quay() {
    let child = Command::new(MOQ_CLOCK)
        .args(["local", "--ticks", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("moq-clock starts");
    let pid = child.id();
    let (done, output) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let Ok(output) = output.recv_timeout(RUN_LIMIT) else {
        // The child is ours: end it by its id.
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!("moq-clock did not finish in {RUN_LIMIT:?}");
    };
    let output = output.expect("moq-clock ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "moq-clock failed: {stdout}{stderr}"
    );
    // Both sessions negotiated a moq-net version as their WebTransport subprotocol.
    assert_eq!(stdout.matches("speaks moq-lite-").count(), 2, "{stdout}");
    let ticks: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("tick "))
        .collect();
    assert_eq!(ticks.len(), 2, "{stdout}");
    assert!(ticks.iter().all(|tick| tick.ends_with(" UTC")), "{stdout}");
}
