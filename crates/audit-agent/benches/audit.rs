//! One audit of a repository with 10,000 commits and 1,000 Markdown files:
//! the first audit (empty database) and incremental ones, in total and per
//! analysis. Run with `make bench` or
//! `cargo bench -p automation-audit-agent --bench audit`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use automation_async_bridge::Bridge;
use automation_audit_agent::store::Store;
use automation_audit_agent::{AuditConfig, Auditor};
use automation_proto::v1::{Analysis, AuditReport};

const COMMITS: usize = 10_000;
const DOCUMENTS: usize = 1_000;
const RUNS: usize = 5;

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs")
        .success();
    assert!(ok, "git {args:?}");
}

fn document(i: usize, done: usize) -> String {
    let mut text = format!("# Plan {i}\n\nStatus: IN PROGRESS\n\n");
    for item in 0..20 {
        let mark = if item < done { "x" } else { " " };
        text.push_str(&format!("- [{mark}] item {item} of plan {i}\n"));
    }
    text.push_str("\n| Step | State |\n|---|---|\n| Build | ✅ |\n| Ship | 🔜 |\n");
    text.push_str("\n```\n- [x] example, not an item\n```\n");
    text
}

/// A repository made with one `git fast-import`: the documents in the
/// first commit, then a small change per commit.
fn make_repo(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    let mut import = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    let mut input = std::io::BufWriter::new(import.stdin.take().expect("stdin"));
    for n in 0..COMMITS {
        let message = format!("change {n}");
        writeln!(input, "commit refs/heads/main").unwrap();
        writeln!(
            input,
            "committer Bench <bench@example.test> {} +0000",
            1_700_000_000 + n
        )
        .unwrap();
        writeln!(input, "data {}\n{message}", message.len()).unwrap();
        if n == 0 {
            for i in 0..DOCUMENTS {
                let text = document(i, i % 21);
                let path = format!("docs/area{}/plan{i}.md", i % 25);
                writeln!(input, "M 644 inline {path}\ndata {}\n{text}", text.len()).unwrap();
            }
        }
        let text = format!("{n}\n");
        writeln!(
            input,
            "M 644 inline counter.txt\ndata {}\n{text}",
            text.len()
        )
        .unwrap();
        writeln!(input).unwrap();
    }
    drop(input);
    assert!(import.wait().unwrap().success());
    git(dir, &["checkout", "-q", "-f", "main"]);
}

fn seconds(report: &AuditReport, analysis: Analysis) -> f64 {
    report
        .analyses
        .iter()
        .find(|a| a.analysis == analysis as i32)
        .map_or(0.0, |a| a.duration_seconds)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn show(name: &str, reports: &[AuditReport]) {
    let ms = |f: &dyn Fn(&AuditReport) -> f64| median(reports.iter().map(f).collect()) * 1000.0;
    println!(
        "{name:<28} total {:>8.1} ms   git {:>7.1} ms   markers {:>7.1} ms   coverage {:>6.2} ms   (median of {})",
        ms(&|r| r.duration_seconds),
        ms(&|r| seconds(r, Analysis::Git)),
        ms(&|r| seconds(r, Analysis::Markers)),
        ms(&|r| seconds(r, Analysis::Coverage)),
        reports.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    make_repo(repo.path());
    std::fs::write(
        repo.path().join("lcov.info"),
        (0..200)
            .map(|f| {
                let lines: String = (1..=50)
                    .map(|l| format!("DA:{l},{}\n", (l + f) % 3))
                    .collect();
                format!("SF:src/f{f}.rs\n{lines}end_of_record\n")
            })
            .collect::<String>(),
    )
    .unwrap();
    println!(
        "audit of {COMMITS} commits and {DOCUMENTS} Markdown files (repository made in {:.1} s)",
        started.elapsed().as_secs_f64()
    );

    runtime.block_on(async {
        let bridge = Bridge::new();
        let config = AuditConfig::new(repo.path().to_path_buf());
        let mut first = Vec::new();
        let mut unchanged = Vec::new();
        let mut incremental = Vec::new();
        for run in 0..RUNS {
            let db = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::new(db.path().join("a.db"), Duration::from_secs(5)));
            let auditor = Auditor::new(config.clone(), store, bridge.clone(), None);
            let report = auditor.audit("bench").await;
            assert_eq!(
                report.new_commits,
                (COMMITS + run * 10) as u64,
                "{:?}",
                report.problems
            );
            assert_eq!(report.documents_scanned, DOCUMENTS as u64);
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            first.push(report);
            unchanged.push(auditor.audit("bench").await);
            // Ten commits, each adding a done item to a plan.
            for i in 0..10 {
                let n = run * 10 + i;
                let path = repo.path().join(format!("docs/area{}/plan{n}.md", n % 25));
                std::fs::write(
                    &path,
                    document(n, n % 21) + &format!("\n- [x] extra {run}\n"),
                )
                .unwrap();
                git(repo.path(), &["add", "-A"]);
                let ok = Command::new("git")
                    .args(["commit", "-q", "-m", "more"])
                    .current_dir(repo.path())
                    .env("GIT_AUTHOR_NAME", "b")
                    .env("GIT_AUTHOR_EMAIL", "b@example.test")
                    .env("GIT_COMMITTER_NAME", "b")
                    .env("GIT_COMMITTER_EMAIL", "b@example.test")
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            }
            let report = auditor.audit("bench").await;
            assert_eq!(report.new_commits, 10);
            incremental.push(report);
        }
        show("first audit (empty db)", &first);
        show("incremental, no change", &unchanged);
        show("incremental, 10 commits", &incremental);
        let items = first[0].tasks.unwrap_or_default();
        println!(
            "items: {} done, {} in progress, {} planned; coverage {:.1} %",
            items.done,
            items.in_progress,
            items.planned,
            first[0]
                .coverage
                .as_ref()
                .and_then(|c| c.percent)
                .unwrap_or(f64::NAN)
        );
    });
}
