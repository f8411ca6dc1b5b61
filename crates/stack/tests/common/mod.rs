//! What the end-to-end tests share: a temporary repository with a failing
//! test and a coverage file, the workspace's binaries, and `automationctl`.

#![allow(dead_code)]

pub mod process;
pub mod services;
pub mod traces;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use automation_testkit::git::Repo;
pub use automation_testkit::until;

/// The failing test suite the watcher runs: libtest output, exit 101.
pub const TESTS: &str = r#"#!/bin/sh
echo "running 3 tests"
echo "test parser::empty_input ... FAILED"
echo "test parser::ok ... ok"
echo "test net::retry ... ok"
echo "failures:"
echo "    parser::empty_input"
echo "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
exit 101
"#;

/// A git repository with a plan, a coverage report (3 of 4 lines) and a
/// test script that fails; two commits.
pub fn repository() -> Repo {
    let repo = Repo::new();
    repo.write("run-tests.sh", TESTS);
    repo.write(
        "PLAN.md",
        "# Plan\n\n- [x] collector\n- [x] watcher\n- [ ] stack ⏳\n",
    );
    repo.write(
        "lcov.info",
        "SF:src/lib.rs\nDA:1,1\nDA:2,1\nDA:3,0\nDA:4,5\nend_of_record\n",
    );
    repo.commit_all("first");
    repo.write("README.md", "a project\n");
    repo.commit_all("second");
    repo
}

/// A binary of the workspace. `cargo test --workspace` (what `make test`
/// runs) builds every binary before any test runs; they sit next to the
/// test executable's `deps/` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the end-to-end tests with `cargo test --workspace`, which builds every binary",
        path.display()
    );
    path
}

/// A free port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `automationctl` with `args`, off the async workers.
pub async fn automationctl(endpoints: &[String], args: &[&str]) -> Output {
    let mut all: Vec<String> = endpoints.to_vec();
    all.extend(args.iter().map(|s| (*s).to_owned()));
    let bin = binary("automationctl");
    tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(&all)
            .env_remove("AUTOMATION_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}
