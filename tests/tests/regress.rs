//! PostgreSQL's own test drivers against a real server: pg_regress golden files for
//! the DDL and EXPLAIN surface (sql/regress), and isolation specs run by
//! pg_isolation_regress (sql/isolation) for lost updates, write skew, phantoms,
//! deadlocks, lock timeouts and savepoints.

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
