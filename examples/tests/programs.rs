//! Runs each example program the way its docs say, and checks what it prints and keeps across
//! runs (each run reopens the pool).

use std::path::Path;
use std::process::Command;

fn run(bin: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let out = match stdin {
        None => cmd.output().expect("run the example"),
        Some(text) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn");
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
    };
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

/// The task queue, its std twin on the same commands: the same output, run by run.
#[test]
fn task_queue_matches_its_std_twin() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("tasks.pool");
    let file = dir.path().join("tasks.txt");
    let script: &[&[&str]] = &[
        &["add", "2", "write docs", "docs", "rust"],
        &["add", "5", "fix bug", "rust"],
        &["add", "1", "lunch"],
        &["add", "5", "review", "rust", "team"],
        &["list"],
        &["claim"],
        &["claim"],
        &["finish", "1"],
        &["finish", "3"],
        &["search", "rust"],
        &["purge"],
        &["list"],
        &["search", "rust"],
        &["claim"],
        &["claim"],
        &["claim"],
    ];
    let mut outputs = Vec::new();
    for cmd in script {
        let p: Vec<&str> = [pool.to_str().unwrap()]
            .into_iter()
            .chain(cmd.iter().copied())
            .collect();
        let f: Vec<&str> = [file.to_str().unwrap()]
            .into_iter()
            .chain(cmd.iter().copied())
            .collect();
        let (ok_p, out_p) = run(env!("CARGO_BIN_EXE_task-queue"), &p, None);
        let (ok_f, out_f) = run(env!("CARGO_BIN_EXE_task-queue-std"), &f, None);
        assert!(ok_p && ok_f, "{cmd:?}");
        assert_eq!(out_p, out_f, "{cmd:?}");
        outputs.push(out_p);
    }
    assert_eq!(outputs[5], "2 fix bug\n", "highest priority, oldest first");
    assert_eq!(outputs[6], "4 review\n");
    assert_eq!(outputs[10], "purged 2\n");
    assert_eq!(
        outputs[11],
        "2 [claimed] p5 fix bug [\"rust\"]\n4 [claimed] p5 review [\"rust\", \"team\"]\n"
    );
    assert_eq!(outputs[15], "nothing pending\n");
    let (ok, _) = run(
        env!("CARGO_BIN_EXE_task-queue"),
        &[pool.to_str().unwrap(), "finish", "99"],
        None,
    );
    assert!(!ok, "an unknown task is an error");
}

#[test]
fn kv_store_keeps_keys_in_order_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("kv.pool");
    let p = pool.to_str().unwrap();
    let kv = env!("CARGO_BIN_EXE_kv");
    assert_eq!(run(kv, &[p, "put", "b", "2"], None), (true, String::new()));
    assert_eq!(
        run(kv, &[p, "put", "b", "3"], None),
        (true, "2\n".into()),
        "the old value"
    );
    let (ok, out) = run(kv, &[p, "import"], Some("a=1\nab=x\nc=9\n"));
    assert!(ok && out == "imported 3\n", "{out}");
    assert_eq!(run(kv, &[p, "list"], None).1, "a=1\nab=x\nb=3\nc=9\n");
    assert_eq!(run(kv, &[p, "list", "a"], None).1, "a=1\nab=x\n");
    assert!(run(kv, &[p, "del", "a"], None).0);
    assert!(!run(kv, &[p, "get", "a"], None).0);
    assert_eq!(run(kv, &[p, "get", "c"], None), (true, "9\n".into()));
    // A bad import line fails the whole transaction: nothing of it is stored.
    let (ok, _) = run(kv, &[p, "import"], Some("d=4\nno equals sign\n"));
    assert!(!ok);
    assert!(!run(kv, &[p, "get", "d"], None).0);
}

#[test]
fn linked_list_stays_sorted_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("ll.pool");
    let p = pool.to_str().unwrap();
    let ll = env!("CARGO_BIN_EXE_linked-list");
    assert!(run(ll, &[p, "insert", "5", "3", "9", "3", "7"], None).0);
    assert!(run(ll, &[p, "remove", "9", "4"], None).0);
    assert_eq!(run(ll, &[p, "print"], None).1, "3 [3, 5, 7]\n");
    assert!(run(ll, &[p, "insert", "1", "8"], None).0);
    assert_eq!(run(ll, &[p, "print"], None).1, "5 [1, 3, 5, 7, 8]\n");
    assert!(!run(ll, &[p, "insert", "x"], None).0, "not a number");
}

#[test]
fn counter_service_counts_add_up_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("c.pool");
    let p = pool.to_str().unwrap();
    let cs = env!("CARGO_BIN_EXE_counter-service");
    assert_eq!(
        run(cs, &[p, "4", "300"], None),
        (true, "64 keys, 1200 events counted, total 1200\n".into())
    );
    assert_eq!(
        run(cs, &[p, "2", "50"], None),
        (true, "64 keys, 1300 events counted, total 1300\n".into())
    );
    assert!(Path::new(p).exists());
}
