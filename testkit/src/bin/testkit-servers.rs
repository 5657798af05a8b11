//! The test suite's servers for the shell benchmarks, started the way the
//! tests start them (a free port on 127.0.0.1, stopped with this process):
//!
//!     testkit-servers registry DATA_DIR   Debian's docker-registry storing
//!                                         its blobs in DATA_DIR (kept);
//!                                         prints `127.0.0.1:PORT`
//!     testkit-servers git-daemon BASE     `git daemon --enable=receive-pack`
//!                                         serving BASE; prints `PORT`
//!
//! Prints the address on one line once the server answers, then serves
//! until its standard input closes (the script that started it ended) and
//! stops the server. Meant for `coproc`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_tests::git::GitDaemon;
use imageauto_tests::registry::Registry;
use std::io::{Read, Write};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [what, dir] = args.as_slice() else {
        usage();
    };
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).unwrap();
    // Whatever runs, it is dropped (and stopped) before this returns.
    let _running: Box<dyn std::any::Any> = match what.as_str() {
        "registry" => {
            let r = Registry::start_keeping(dir);
            say(&r.host());
            Box::new(r)
        }
        "git-daemon" => {
            let d = GitDaemon::start(dir);
            say(&d.port.to_string());
            Box::new(d)
        }
        _ => usage(),
    };
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn say(address: &str) {
    let mut out = std::io::stdout();
    writeln!(out, "{address}").unwrap();
    out.flush().unwrap();
}

fn usage() -> ! {
    eprintln!("usage: testkit-servers registry DATA_DIR | git-daemon BASE");
    std::process::exit(2);
}
