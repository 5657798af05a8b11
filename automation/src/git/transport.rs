//! The network side: credentials and certificate callbacks, a watchdog on
//! progress, fetches and pushes (and pushes to a local path).

use super::*;

#[derive(Default)]
pub(super) struct CallbackState {
    credential_attempts: u32,
    host_key_error: Option<String>,
    rejected: Vec<(String, String)>,
    /// What the server said on the side band (`remote: ...` lines: a
    /// hook's reasons), capped.
    remote_messages: String,
}

/// Progress of a network operation, shared with the thread that watches it:
/// the callbacks stamp each sign of life, and stop the operation once the
/// watcher gave up on it.
#[derive(Default)]
pub(super) struct Activity {
    started: Option<Instant>,
    /// Milliseconds after `started` of the last sign of life.
    last: AtomicU64,
    abandoned: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Some(Instant::now()),
            ..Activity::default()
        })
    }

    /// Records progress; false once the operation was abandoned.
    fn alive(&self) -> bool {
        if let Some(s) = self.started {
            let ms = u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        !self.abandoned.load(Ordering::Relaxed)
    }

    fn idle_for(&self) -> Duration {
        let Some(s) = self.started else {
            return Duration::ZERO;
        };
        s.elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// Runs a network operation on its own thread and waits for it while it
/// makes progress. An operation idle for longer than `idle` (a server that
/// accepts the connection and never answers) is abandoned: the caller gets
/// [`GitError::Timeout`] at once, and the operation stops at its next
/// callback, if one ever comes (in a process of [`set_network_runner`]'s,
/// the process ends instead). (libgit2's own socket timeouts can only be
/// set through an unsafe global option; this keeps the process free of it.)
pub(super) fn watched<T: Send + 'static>(
    url: &str,
    idle: Duration,
    op: impl FnOnce(Arc<Activity>) -> Result<T, GitError> + Send + 'static,
) -> Result<T, GitError> {
    watched_with(url, idle, op, &mut || {})
}

/// [`watched`], calling `beat` when the operation made progress since the
/// last call (checked every tenth of a second).
pub(super) fn watched_with<T: Send + 'static>(
    url: &str,
    idle: Duration,
    op: impl FnOnce(Arc<Activity>) -> Result<T, GitError> + Send + 'static,
    beat: &mut dyn FnMut(),
) -> Result<T, GitError> {
    let activity = Activity::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let a = activity.clone();
    std::thread::Builder::new()
        .name("git-network".into())
        .spawn(move || {
            let _ = tx.send(op(a));
        })
        .map_err(|e| GitError::Repo(format!("cannot start a thread for Git: {e}")))?;
    let mut beaten = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => return r,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(GitError::Repo(format!(
                    "{}: the Git operation ended without a result",
                    display_url(url)
                )));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if child::terminated() {
                    activity.abandoned.store(true, Ordering::Relaxed);
                    return Err(GitError::Cancelled {
                        url: display_url(url),
                    });
                }
                let last = activity.last.load(Ordering::Relaxed);
                if beaten != Some(last) {
                    beaten = Some(last);
                    beat();
                }
                if activity.idle_for() > idle {
                    activity.abandoned.store(true, Ordering::Relaxed);
                    return Err(GitError::Timeout {
                        url: display_url(url),
                        seconds: idle.as_secs(),
                    });
                }
            }
        }
    }
}

pub(super) fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// The callbacks for one remote operation.
pub(super) fn callbacks<'a>(
    auth: &'a GitAuth,
    url: &'a str,
    state: &'a RefCell<CallbackState>,
    activity: &'a Activity,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let (host, port) = url_host(url);
    let url_has_password = reqwest::Url::parse(url).is_ok_and(|u| u.password().is_some());
    cb.transfer_progress(move |_| activity.alive());
    cb.push_transfer_progress(move |_, _, _| {
        activity.alive();
    });
    cb.sideband_progress(move |text| {
        let mut st = state.borrow_mut();
        if st.remote_messages.len() < 4096 {
            st.remote_messages
                .push_str(&String::from_utf8_lossy(text).replace('\r', "\n"));
        }
        activity.alive()
    });
    cb.pack_progress(move |_, _, _| {
        activity.alive();
    });
    cb.update_tips(move |_, _, _| activity.alive());
    cb.credentials(move |_url, username_from_url, allowed| {
        if !activity.alive() {
            return Err(git2::Error::from_str("abandoned"));
        }
        let mut st = state.borrow_mut();
        st.credential_attempts += 1;
        let attempt = st.credential_attempts;
        drop(st);
        if attempt > 4 {
            return Err(git2::Error::from_str(
                "the server refused every credential offered",
            ));
        }
        // libgit2 tries a URL's own user and password first, and asks here
        // only once the server refused them.
        if url_has_password && allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(git2::Error::from_str(
                "the server refused the user name and password written in the URL",
            ));
        }
        let user = username_from_url
            .map(str::to_string)
            .or_else(|| auth.username.clone())
            .unwrap_or_else(|| "git".to_string());
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(&user);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            if let Some(key) = &auth.identity {
                return Cred::ssh_key_from_memory(
                    &user,
                    auth.identity_pub.as_deref(),
                    key,
                    auth.password.as_deref(),
                );
            }
            if auth.use_environment {
                if attempt == 1 && std::env::var_os("SSH_AUTH_SOCK").is_some() {
                    return Cred::ssh_key_from_agent(&user);
                }
                if let Some(h) = home() {
                    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                        let key = h.join(".ssh").join(name);
                        if key.is_file() {
                            return Cred::ssh_key(&user, None, &key, None);
                        }
                    }
                }
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
                return Cred::userpass_plaintext(u, p);
            }
            if auth.use_environment
                && let Ok(config) = git2::Config::open_default()
            {
                return Cred::credential_helper(&config, url, username_from_url);
            }
        }
        Err(git2::Error::from_str("no credentials for this remote"))
    });
    cb.certificate_check(move |cert, _hostname| {
        activity.alive();
        if let Some(hk) = cert.as_hostkey() {
            let name = host_name(&host, port);
            let known = match (&auth.known_hosts, auth.use_environment) {
                (Some(k), _) => Some(k.clone()),
                (None, true) => home()
                    .and_then(|h| std::fs::read_to_string(h.join(".ssh/known_hosts")).ok()),
                (None, false) => None,
            };
            let fail = |msg: String| {
                state.borrow_mut().host_key_error = Some(msg.clone());
                Err(git2::Error::from_str(&msg))
            };
            let Some(known) = known else {
                return fail(format!(
                    "no known_hosts to verify the host key of {name} against: give known_hosts"
                ));
            };
            let Some(key) = hk.hostkey() else {
                return fail(format!("the SSH server {name} sent no host key"));
            };
            let key_type = hk.hostkey_type().map(|t| t.name()).unwrap_or("");
            let kh = KnownHosts::parse(&known);
            return match kh.check(&name, key_type, key) {
                HostKeyCheck::Match => Ok(CertificateCheckStatus::CertificateOk),
                HostKeyCheck::Mismatch => fail(format!(
                    "the host key of {name} ({key_type}) does not match known_hosts: it changed, or someone is in the middle; refusing"
                )),
                HostKeyCheck::Unknown => {
                    let listed = kh.listed_types(&name);
                    if listed.is_empty() {
                        fail(format!(
                            "{name} is not in known_hosts: add its host key ({key_type}) to known_hosts"
                        ))
                    } else {
                        fail(format!(
                            "{name} offered a {key_type} host key, but known_hosts lists only {} for it: add its {key_type} key",
                            listed.join(", ")
                        ))
                    }
                }
            };
        }
        if let (Some(x509), Some(ca)) = (cert.as_x509(), &auth.ca_pem) {
            return match verify_with_ca(x509.data(), ca, &host) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(msg) => {
                    state.borrow_mut().host_key_error = Some(msg.clone());
                    Err(git2::Error::from_str(&msg))
                }
            };
        }
        Ok(CertificateCheckStatus::CertificatePassthrough)
    });
    cb.push_update_reference(move |refname, status| {
        activity.alive();
        if let Some(msg) = status {
            state
                .borrow_mut()
                .rejected
                .push((refname.to_string(), msg.to_string()));
        }
        Ok(())
    });
    cb
}

/// Verifies a server certificate against `ca_pem` for `host` (webpki).
pub(super) fn verify_with_ca(der: &[u8], ca_pem: &[u8], host: &str) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca.crt does not parse: {e}"))?;
    let anchors: Vec<_> = cas
        .iter()
        .filter_map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .ok()
                .map(|a| a.to_owned())
        })
        .collect();
    if anchors.is_empty() {
        return Err("ca.crt holds no usable CA certificate".into());
    }
    let leaf = CertificateDer::from(der.to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("the server certificate does not parse: {e}"))?;
    let describe = || crate::registry::tls::describe_certificate(der).unwrap_or_default();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| {
        format!(
            "the server certificate ({}) is not trusted by ca.crt: {e}",
            describe()
        )
    })?;
    let name =
        ServerName::try_from(host.to_string()).map_err(|_| format!("{host} is not a host name"))?;
    ee.verify_is_valid_for_subject_name(&name).map_err(|e| {
        format!(
            "the server certificate ({}) is not valid for {host}: {e}",
            describe()
        )
    })
}

pub(super) fn remote_error(url: &str, e: git2::Error, state: &RefCell<CallbackState>) -> GitError {
    if message_is_abandoned(&e) {
        return GitError::Remote {
            url: display_url(url),
            message: "abandoned after no progress".into(),
        };
    }
    if let Some(msg) = state.borrow_mut().host_key_error.take() {
        let (host, port) = url_host(url);
        return GitError::HostKey {
            host: host_name(&host, port),
            message: msg,
        };
    }
    let message = e.message().to_string();
    let refused = e.class() == git2::ErrorClass::Ssh
        && mentions_any(&message, &["authentication", "credentials"])
        || e.code() == git2::ErrorCode::Auth
        || mentions_any(
            &message,
            &[
                "refused every credential",
                "refused the user name and password",
                "no credentials",
                "failed to acquire username/password",
                "401",
            ],
        );
    if refused {
        return GitError::Auth {
            url: display_url(url),
            message,
        };
    }
    GitError::Remote {
        url: display_url(url),
        message,
    }
}

pub(super) fn message_is_abandoned(e: &git2::Error) -> bool {
    e.message() == "abandoned" || e.code() == git2::ErrorCode::User
}

/// The HTTP header that carries a bearer token, when the auth has one.
pub(super) fn bearer_header(auth: &GitAuth) -> Option<String> {
    auth.bearer_token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}"))
}

/// Fetches `refspecs` from `url` into `repo` (all branches to
/// `refs/remotes/origin/*` and all tags when `refspecs` is empty). The
/// operation runs with its own handle on the repository, in a child process
/// when a runner is set ([`set_network_runner`]), else on a thread of its
/// own, and is abandoned when it makes no progress for the auth's idle
/// timeout.
pub fn fetch(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    refspecs: &[String],
) -> Result<(), GitError> {
    let git_dir = repo.path().to_path_buf();
    let (url_owned, auth_owned) = (url.to_string(), auth.clone());
    let specs: Vec<String> = if refspecs.is_empty() {
        vec![
            "+refs/heads/*:refs/remotes/origin/*".to_string(),
            "+refs/tags/*:refs/tags/*".to_string(),
        ]
    } else {
        refspecs.to_vec()
    };
    if let Some(runner) = child::runner() {
        let op = child::Operation::Fetch { refspecs: specs };
        return child::run_in_child(runner, op, &git_dir, url, auth, child::BACKSTOP_MARGIN);
    }
    watched(url, idle(auth), move |activity| {
        let repo = Repository::open(&git_dir).map_err(|e| GitError::repo("repository", e))?;
        fetch_now(&repo, &url_owned, &auth_owned, &specs, &activity)
    })
}

pub(super) fn idle(auth: &GitAuth) -> Duration {
    auth.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)
}

/// `url` as a remote of `repo` that is not saved in its configuration.
fn anonymous_remote<'r>(repo: &'r Repository, url: &str) -> Result<git2::Remote<'r>, GitError> {
    repo.remote_anonymous(url)
        .map_err(|e| GitError::repo(&display_url(url), e))
}

pub(super) fn fetch_now(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    specs: &[String],
    activity: &Activity,
) -> Result<(), GitError> {
    let mut remote = anonymous_remote(repo, url)?;
    let state = RefCell::new(CallbackState::default());
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(auth, url, &state, activity));
    // Tags come only through the refspecs (a checkout by tag or semver asks
    // for them); no automatic tag following.
    opts.download_tags(git2::AutotagOption::None);
    // Remote-tracking branches deleted on the remote go here too: a cache
    // must not build on a branch that no longer exists.
    opts.prune(git2::FetchPrune::On);
    let header = bearer_header(auth);
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    opts.custom_headers(&headers);
    remote
        .fetch(specs, Some(&mut opts), None)
        .map_err(|e| remote_error(url, e, &state))
}

/// Pushes `refspecs` (`src:dst`, sources are local references) to `url` with
/// push options (`key=value`). A reference the server rejects (a hook, a
/// non-fast-forward) is an error: libgit2 reports those only through a
/// callback, and its own result is Ok.
pub fn push(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    refspecs: &[String],
    options: &BTreeMap<String, String>,
) -> Result<(), GitError> {
    if is_local(url) {
        return push_local(repo, url, refspecs, options, idle(auth));
    }
    let git_dir = repo.path().to_path_buf();
    let (url_owned, auth_owned) = (url.to_string(), auth.clone());
    let (specs, options) = (refspecs.to_vec(), options.clone());
    if let Some(runner) = child::runner() {
        let op = child::Operation::Push {
            refspecs: specs,
            options,
        };
        return child::run_in_child(runner, op, &git_dir, url, auth, child::BACKSTOP_MARGIN);
    }
    watched(url, idle(auth), move |activity| {
        let repo = Repository::open(&git_dir).map_err(|e| GitError::repo("repository", e))?;
        push_now(&repo, &url_owned, &auth_owned, &specs, &options, &activity)
    })
}

pub(super) fn push_now(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    refspecs: &[String],
    options: &BTreeMap<String, String>,
    activity: &Activity,
) -> Result<(), GitError> {
    let mut remote = anonymous_remote(repo, url)?;
    let state = RefCell::new(CallbackState::default());
    let mut opts = PushOptions::new();
    opts.remote_callbacks(callbacks(auth, url, &state, activity));
    let header = bearer_header(auth);
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    opts.custom_headers(&headers);
    let push_options: Vec<String> = options
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    let push_options: Vec<&str> = push_options.iter().map(String::as_str).collect();
    if !push_options.is_empty() {
        opts.remote_push_options(&push_options);
    }
    let dst = |spec: &str| spec.rsplit(':').next().unwrap_or(spec).to_string();
    if let Err(e) = remote.push(refspecs, Some(&mut opts)) {
        let msg = e.message().to_lowercase();
        if mentions_any(
            &msg,
            &["fast-forward", "fastforward", "not present locally"],
        ) {
            return Err(GitError::NonFastForward {
                url: display_url(url),
                refname: refspecs.first().map(|s| dst(s)).unwrap_or_default(),
            });
        }
        return Err(remote_error(url, e, &state));
    }
    let rejected = std::mem::take(&mut state.borrow_mut().rejected);
    match rejected.into_iter().next() {
        Some((refname, message)) => {
            let said: Vec<String> = state
                .borrow()
                .remote_messages
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            let message = if said.is_empty() {
                message
            } else {
                format!("{message}: {}", said.join("; "))
            };
            Err(rejection(url, refname, message))
        }
        None => Ok(()),
    }
}

/// A rejected reference: a non-fast-forward (the branch moved), or a refusal
/// (a hook, a protected branch).
pub(super) fn rejection(url: &str, refname: String, message: String) -> GitError {
    let moved = [
        "non-fast-forward",
        "fetch first",
        "stale",
        "failed to update ref",
        "cannot lock ref",
    ];
    let url = display_url(url);
    if mentions_any(&message.to_lowercase(), &moved) {
        GitError::NonFastForward { url, refname }
    } else {
        GitError::Rejected {
            url,
            refname,
            message,
        }
    }
}

/// Whether `message` contains any of `phrases`.
fn mentions_any(message: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|p| message.contains(p))
}

/// Pushes to a repository on this machine with git itself, whose local
/// transport runs the remote's hooks (pre-receive, update) as a server
/// would: a push a hook refuses is reported as refused.
pub(super) fn push_local(
    repo: &Repository,
    url: &str,
    refspecs: &[String],
    options: &BTreeMap<String, String>,
    idle: Duration,
) -> Result<(), GitError> {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("--git-dir")
        .arg(repo.path())
        .args(["push", "--porcelain", "--no-verify"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    for (k, v) in options {
        cmd.arg("--push-option");
        cmd.arg(if v.is_empty() {
            k.clone()
        } else {
            format!("{k}={v}")
        });
    }
    cmd.arg(url).args(refspecs);
    let shown = display_url(url);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| GitError::Remote {
            url: shown.clone(),
            message: format!(
                "the remote is a folder on this machine; pushing there runs its hooks through the git program, which cannot be started ({e}): install git"
            ),
        })?;
    // git says nothing until it is done: the limit is on the whole push
    // (hooks take their time), and git is killed past it.
    let limit = idle.max(Duration::from_secs(600));
    let out = match child::supervise(child, None, limit, false) {
        Ok(out) => out,
        Err(child::Stop::Quiet) => {
            return Err(GitError::Timeout {
                url: shown,
                seconds: limit.as_secs(),
            });
        }
        Err(child::Stop::Cancelled) => return Err(GitError::Cancelled { url: shown }),
        Err(child::Stop::Io(e)) => {
            return Err(GitError::Remote {
                url: shown,
                message: format!("git push: {e}"),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Porcelain lines: FLAG \t FROM:TO \t SUMMARY (REASON); `!` is a rejection.
    for line in stdout.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(flag), Some(spec), summary) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if flag == "!" {
            let refname = spec.rsplit(':').next().unwrap_or(spec).to_string();
            let summary = summary.unwrap_or("");
            let hook = stderr
                .lines()
                .filter_map(|l| l.strip_prefix("remote: "))
                .collect::<Vec<_>>()
                .join("; ");
            let message = if hook.is_empty() {
                summary.to_string()
            } else {
                format!("{summary}: {hook}")
            };
            return Err(rejection(url, refname, message));
        }
    }
    if !out.status.success() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(GitError::Remote {
            url: shown,
            message: format!("git push failed: {}", last.trim()),
        });
    }
    Ok(())
}
