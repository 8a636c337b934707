//! Guards the `PTM_FORCE_PMEM` and `PTM_EADR` environment overrides of domain selection. (In
//! the `serial` binary: it re-executes itself, and a child briefly shares every open
//! descriptor, pool locks included.)

use crate::common;

use pmem_core::{detected_flush_instruction, Region, RegionOptions};

#[test]
fn opening_with_defaults_reads_the_environment_override() {
    let _serial = crate::serial();
    // Run in a child process so the variable does not leak into other tests' threads.
    if std::env::var_os("PTM_DOMAIN_CHILD").is_some() {
        let path = std::env::var("PTM_DOMAIN_CHILD").unwrap();
        let r = Region::open(&path).unwrap();
        println!("domain={}", r.domain().name());
        return;
    }
    let dir = common::shm_dir();
    let path = common::pool_path(&dir, "env.pool");
    drop(
        RegionOptions::new()
            .force_pmem(false)
            .create(&path, 1 << 20)
            .unwrap(),
    );
    let run = |force: Option<&str>, eadr: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "domain_env::opening_with_defaults_reads_the_environment_override",
            "--nocapture",
        ]);
        cmd.env("PTM_DOMAIN_CHILD", &path)
            .env_remove("PTM_FORCE_PMEM")
            .env_remove("PTM_EADR");
        if let Some(v) = force {
            cmd.env("PTM_FORCE_PMEM", v);
        }
        if let Some(v) = eadr {
            cmd.env("PTM_EADR", v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(None, None).contains("domain=journaled"));
    assert!(run(Some("0"), None).contains("domain=journaled"));
    let insn = detected_flush_instruction().unwrap().name();
    assert!(run(Some("1"), None).contains(&format!("domain={insn}")));
    // `PTM_EADR` declares the platform eADR (`1`) or not (`0`) for persistent memory (this
    // machine's sysfs has no region to say).
    assert!(run(Some("1"), Some("1")).contains("domain=eadr"));
    assert!(run(Some("1"), Some("0")).contains(&format!("domain={insn}")));
}
