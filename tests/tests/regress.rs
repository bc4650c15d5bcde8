//! PostgreSQL's own test drivers against a real server: pg_regress golden files for
//! the DDL and EXPLAIN surface (sql/regress), and isolation specs run by
//! pg_isolation_regress (sql/isolation) for lost updates, write skew, phantoms,
//! deadlocks, lock timeouts and savepoints, and PostgreSQL 15's own isolation specs
//! ported to memory tables (with a check of the alternative outputs they may have).

use memfdw_e2e::Cluster;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pgxs(tool: &str) -> PathBuf {
    let out = Command::new("/usr/bin/pg_config")
        .arg("--pgxs")
        .output()
        .unwrap();
    let mk = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    // .../lib/pgxs/src/makefiles/pgxs.mk -> .../lib/pgxs/src/test/<tool dir>/<tool>
    let src = mk.parent().unwrap().parent().unwrap().to_path_buf();
    let dir = if tool == "pg_regress" {
        "regress"
    } else {
        "isolation"
    };
    src.join("test").join(dir).join(tool)
}

fn run(tool: &str, suite: &str) {
    let c = Cluster::start();
    // With --use-existing the drivers neither create the database nor load extensions.
    let db = format!("memfdw_{suite}");
    c.connect()
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let mut conn = postgres::Client::connect(
        &c.conn_str()
            .replace("dbname=postgres", &format!("dbname={db}")),
        postgres::NoTls,
    )
    .unwrap();
    conn.batch_execute("CREATE EXTENSION memfdw").unwrap();
    drop(conn);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("sql")
        .join(suite);
    let out = c.dir.join(format!("{suite}-out"));
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new(pgxs(tool))
        .arg("--use-existing")
        .arg("--host=127.0.0.1")
        .arg(format!("--port={}", c.port))
        .arg("--user=postgres")
        .arg(format!("--inputdir={}", root.display()))
        .arg(format!("--outputdir={}", out.display()))
        .arg(format!("--schedule={}", root.join("schedule").display()))
        .args(
            // PostgreSQL's own specs, ported (sql/isolation/port_pg15.py).
            Some(root.join("schedule_pg15"))
                .filter(|p| p.exists())
                .map(|p| format!("--schedule={}", p.display())),
        )
        .arg(format!("--dbname={db}"))
        .env_remove("PGOPTIONS")
        .output()
        .unwrap();
    let diffs = std::fs::read_to_string(out.join("regression.diffs")).unwrap_or_default();
    assert!(
        status.status.success(),
        "{tool} failed:\n{}\n{}\n{diffs}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn pg_regress_golden_files() {
    run("pg_regress", "regress");
}

#[test]
fn pg_isolation_regress_specs() {
    run("pg_isolation_regress", "isolation");
}

/// One permutation of an isolation output: its header and its step blocks, each with
/// the step's name and its text (the "step ..." line and what follows it).
struct Permutation {
    header: String,
    blocks: Vec<(String, String)>,
}

fn permutations(out: &str) -> Vec<Permutation> {
    let mut perms: Vec<Permutation> = Vec::new();
    for line in out.lines() {
        if line.starts_with("starting permutation:") {
            perms.push(Permutation {
                header: line.to_string(),
                blocks: Vec::new(),
            });
            continue;
        }
        let Some(p) = perms.last_mut() else { continue };
        if let Some(rest) = line.strip_prefix("step ") {
            let name = rest.split(':').next().unwrap().to_string();
            p.blocks.push((name, String::new()));
        } else if p.blocks.is_empty() {
            p.blocks.push((String::new(), String::new()));
        }
        let b = p.blocks.last_mut().unwrap();
        b.1.push_str(line);
        b.1.push('\n');
    }
    perms
}

/// The session of each step of a spec.
fn step_sessions(spec: &str) -> std::collections::HashMap<String, String> {
    let mut map = std::collections::HashMap::new();
    let mut session = String::new();
    for line in spec.lines() {
        let l = line.trim_start();
        if let Some(s) = l.strip_prefix("session ") {
            session = s.trim().trim_matches('"').to_string();
        } else if let Some(s) = l.strip_prefix("step ") {
            let name = s.split_whitespace().next().unwrap().trim_matches('"');
            map.insert(name.to_string(), session.clone());
        }
    }
    map
}

const SERIALIZATION_FAILURE: &str = "ERROR:  could not serialize access";

/// Checks an alternative output against PostgreSQL's under the one difference allowed:
/// an optimistic engine aborts the same transactions, at their COMMIT instead of at an
/// earlier statement. Returns what breaks the rule.
fn alternative_violations(spec: &str, pg: &str, alt: &str) -> Vec<String> {
    let sessions = step_sessions(spec);
    let session_of = |step: &str| sessions.get(step).cloned().unwrap_or_default();
    let (pg, alt) = (permutations(pg), permutations(alt));
    let mut bad = Vec::new();
    if pg.len() != alt.len() {
        bad.push(format!(
            "{} permutations, PostgreSQL has {}",
            alt.len(),
            pg.len()
        ));
        return bad;
    }
    for (p, a) in pg.iter().zip(&alt) {
        if p.header != a.header {
            bad.push(format!("permutation order: {} vs {}", a.header, p.header));
            continue;
        }
        let aborted = |blocks: &[(String, String)]| {
            let mut s: Vec<String> = blocks
                .iter()
                .filter(|(_, text)| text.contains(SERIALIZATION_FAILURE))
                .map(|(step, _)| session_of(step))
                .collect();
            s.sort();
            s.dedup();
            s
        };
        let (pa, aa) = (aborted(&p.blocks), aborted(&a.blocks));
        if pa != aa {
            bad.push(format!(
                "{}: sessions aborted {aa:?}, PostgreSQL aborts {pa:?}",
                p.header
            ));
            continue;
        }
        // Sessions that commit: identical output, step by step.
        let of = |blocks: &[(String, String)], s: &str| -> Vec<(String, String)> {
            blocks
                .iter()
                .filter(|(step, _)| session_of(step) == s)
                .cloned()
                .collect()
        };
        let mut all: Vec<String> = sessions.values().cloned().collect();
        all.sort();
        all.dedup();
        for s in &all {
            let (pb, ab) = (of(&p.blocks, s), of(&a.blocks, s));
            if !pa.contains(s) {
                if pb != ab {
                    bad.push(format!("{}: session {s} differs", p.header));
                }
                continue;
            }
            // Aborted sessions: the same output up to PostgreSQL's failing statement,
            // and the failure at a COMMIT.
            let fail = pb
                .iter()
                .position(|(_, t)| t.contains(SERIALIZATION_FAILURE))
                .unwrap();
            if pb[..fail] != ab[..fail.min(ab.len())] {
                bad.push(format!(
                    "{}: session {s} differs before its failure",
                    p.header
                ));
            }
            for (step, text) in &ab {
                if text.contains(SERIALIZATION_FAILURE) && !text.contains("COMMIT") {
                    bad.push(format!(
                        "{}: session {s} fails at {step}, not at its COMMIT",
                        p.header
                    ));
                }
            }
        }
    }
    bad
}

/// Every alternative output listed in sql/isolation/alternatives.txt exists and
/// differs from PostgreSQL's own output only as that file allows.
#[test]
fn isolation_alternatives_differ_only_as_allowed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("sql")
        .join("isolation");
    let list = std::fs::read_to_string(root.join("alternatives.txt")).unwrap();
    let mut checked = 0;
    for alt in list.lines().map(str::trim) {
        if alt.is_empty() || alt.starts_with('#') {
            continue;
        }
        let name = alt.trim_end_matches(".out");
        let base = name.rsplit_once('_').unwrap().0;
        let read = |p: std::path::PathBuf| {
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let spec = read(root.join("specs").join(format!("{base}.spec")));
        let pg = read(root.join("expected").join(format!("{base}.out")));
        let out = read(root.join("expected").join(alt));
        let bad = alternative_violations(&spec, &pg, &out);
        assert!(bad.is_empty(), "{alt}:\n{}", bad.join("\n"));
        checked += 1;
    }
    assert!(checked > 0);
    // The rule itself rejects what it must: a failure moved to another transaction,
    // and one that is not at a COMMIT.
    let spec = "session a\nstep r { SELECT 1; }\nstep c { COMMIT; }\nsession b\nstep w { UPDATE t; }\nstep d { COMMIT; }\n";
    let pg = "starting permutation: r w c d\nstep r: SELECT 1;\nERROR:  could not serialize access due to x\nstep w: UPDATE t;\nstep c: COMMIT;\nstep d: COMMIT;\n";
    let moved = "starting permutation: r w c d\nstep r: SELECT 1;\nstep w: UPDATE t;\nstep c: COMMIT;\nERROR:  could not serialize access due to x\nstep d: COMMIT;\n";
    let other = "starting permutation: r w c d\nstep r: SELECT 1;\nstep w: UPDATE t;\nstep c: COMMIT;\nstep d: COMMIT;\nERROR:  could not serialize access due to x\n";
    let early = "starting permutation: r w c d\nstep r: SELECT 1;\nstep w: UPDATE t;\nERROR:  could not serialize access due to x\nstep c: COMMIT;\nstep d: COMMIT;\n";
    assert!(alternative_violations(spec, pg, moved).is_empty());
    assert!(!alternative_violations(spec, pg, other).is_empty());
    assert!(!alternative_violations(spec, pg, early).is_empty());
}
