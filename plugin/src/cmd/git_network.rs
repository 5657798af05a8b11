//! `__git-network`: runs one network Git operation for another process of
//! this program (the request on stdin, the answer on stdout; see
//! `automation::git::set_network_runner`). Not for people: hidden.

/// The subcommand's name, as the runner's argument.
pub const NAME: &str = "__git-network";

/// Serves the request and ends the process at once, without exit handlers:
/// a thread still stuck in libgit2 (a server that stopped answering) ends
/// with it, and nothing it may hold is torn down under it.
pub fn run() -> ! {
    let (stdin, stdout, mut stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let answered =
        automation::git::serve_network_request(&mut stdin.lock(), &mut stdout.lock(), &mut stderr);
    signal_hook::low_level::exit(if answered.is_ok() { 0 } else { 1 })
}
