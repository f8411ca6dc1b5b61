//! A service binary run the way an operator runs it.

use std::process::Command;

/// Runs `bin` with `env` (and its listeners on any free port) and checks
/// that it refuses the configuration as every service does: exit code 64
/// and one line on stderr that mentions `mentions`. That line.
pub fn refuses(bin: &str, env: &[(&str, &str)], mentions: &str) -> String {
    let out = Command::new(bin)
        .envs(env.iter().copied())
        .env("GRPC_LISTEN", "127.0.0.1:0")
        .env("HTTP_LISTEN", "127.0.0.1:0")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{env:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{env:?}: {stderr}");
    assert!(stderr.contains(mentions), "{env:?}: {stderr}");
    stderr
}
