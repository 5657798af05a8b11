//! Pull requests (an extension: no Flux controller opens them): after a
//! push to an automation's push branch, a pull request from that branch
//! into a base branch is opened on the repository's forge, or the one
//! already open is updated; a second one is never opened.
//!
//! - GitHub (github.com and GitHub Enterprise): `GET /repos/{o}/{r}/pulls`
//!   with `head` and `base`, then `PATCH .../pulls/{n}` or `POST .../pulls`.
//! - GitLab merge requests: `GET /projects/{path}/merge_requests` with
//!   `source_branch` and `target_branch`, then `PUT .../merge_requests/{iid}`
//!   or `POST .../merge_requests` (the path URL-encoded).
//! - Gitea and Forgejo: `GET /repos/{o}/{r}/pulls?state=open`, then
//!   `PATCH .../pulls/{n}` or `POST .../pulls`.
//!
//! What is pure here (where the API is, the title and body) is plain data
//! in and out; [`open_or_update`] is the I/O. Errors never carry the token.

use super::github::said;
use std::fmt;

/// On an ImageUpdateAutomation: the base branch its pull requests go into.
pub const PULL_REQUEST_ANNOTATION: &str = "imageauto.dev/pull-request";
/// On an ImageUpdateAutomation: which forge serves its repository, when its
/// host does not say (`github`, `gitlab`, `gitea`).
pub const FORGE_ANNOTATION: &str = "imageauto.dev/forge";

/// A forge's kind of API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgeKind {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (the same API).
    Gitea,
}

impl ForgeKind {
    pub fn parse(s: &str) -> Option<ForgeKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "github" => Some(ForgeKind::GitHub),
            "gitlab" => Some(ForgeKind::GitLab),
            "gitea" | "forgejo" => Some(ForgeKind::Gitea),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::GitLab => "gitlab",
            ForgeKind::Gitea => "gitea",
        }
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What went wrong with a pull request. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The settings cannot work (an unknown forge, a URL without a
    /// repository path, no token).
    #[error("{0}")]
    Config(String),
    /// The forge refused, or could not be reached.
    #[error("{0}")]
    Api(String),
}

/// Where a repository's pull requests live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgeRepo {
    pub kind: ForgeKind,
    /// The API root, without a trailing `/`.
    pub api: String,
    /// `owner/repo` (GitLab: the project's whole path).
    pub path: String,
}

/// Scheme, host with port, and path of a Git URL (`https://h:1/o/r.git`,
/// `ssh://git@h/o/r`, `git@h:o/r.git`). SSH URLs reach the API over HTTPS.
fn split_url(url: &str) -> Option<(String, String, String)> {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let scheme = match scheme {
            "http" => "http",
            "https" => "https",
            _ => "https",
        };
        // An SSH port says nothing about the API's.
        let host = if scheme == "https" && !url.starts_with("https://") {
            authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .to_string()
        } else {
            authority.to_string()
        };
        return Some((scheme.into(), host, path.to_string()));
    }
    // scp-like `user@host:path`.
    let (before, path) = url.split_once(':')?;
    let host = before.rsplit('@').next().unwrap_or(before);
    Some(("https".into(), host.to_string(), path.to_string()))
}

/// The forge of a Git URL and its API: `kind` when given, else by host
/// (github.com, gitlab.com, codeberg.org). GitHub's API is
/// `https://api.github.com` for github.com, `github_api` when given (a
/// GitHub App's `githubAppBaseURL`), else `<scheme>://<host>/api/v3`
/// (GitHub Enterprise); GitLab's `<scheme>://<host>/api/v4`; Gitea's
/// `<scheme>://<host>/api/v1`. `choose` says how to name the forge when the
/// host does not tell.
pub fn locate(
    git_url: &str,
    kind: Option<ForgeKind>,
    github_api: Option<&str>,
    choose: &str,
) -> Result<ForgeRepo, ForgeError> {
    let shown = super::display_url(git_url);
    let (scheme, host, path) = split_url(git_url).ok_or_else(|| {
        ForgeError::Config(format!(
            "{shown}: not a URL of a repository on a forge: no pull request"
        ))
    })?;
    let bare_host = host.split(':').next().unwrap_or(&host).to_ascii_lowercase();
    let kind = match kind {
        Some(k) => k,
        None => match bare_host.as_str() {
            "github.com" | "www.github.com" => ForgeKind::GitHub,
            "gitlab.com" => ForgeKind::GitLab,
            "codeberg.org" => ForgeKind::Gitea,
            _ if github_api.is_some() => ForgeKind::GitHub,
            _ => {
                return Err(ForgeError::Config(format!(
                    "cannot tell which forge serves {host} (the repository {shown}): {choose}"
                )));
            }
        },
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() < 2 {
        return Err(ForgeError::Config(format!(
            "{shown}: the URL names no owner/repository for {kind}'s API"
        )));
    }
    let root = format!("{scheme}://{host}");
    let (api, path) = match kind {
        ForgeKind::GitHub => {
            let api = match github_api {
                Some(a) => a.trim_end_matches('/').to_string(),
                None if bare_host == "github.com" || bare_host == "www.github.com" => {
                    super::github::DEFAULT_BASE_URL.to_string()
                }
                None => format!("{root}/api/v3"),
            };
            (api, segments[segments.len() - 2..].join("/"))
        }
        ForgeKind::GitLab => (format!("{root}/api/v4"), segments.join("/")),
        ForgeKind::Gitea => {
            // An instance under a path prefix serves its API below it.
            let prefix = segments[..segments.len() - 2].join("/");
            let api = if prefix.is_empty() {
                format!("{root}/api/v1")
            } else {
                format!("{root}/{prefix}/api/v1")
            };
            (api, segments[segments.len() - 2..].join("/"))
        }
    };
    Ok(ForgeRepo { kind, api, path })
}

/// A token for a forge's API.
#[derive(Clone)]
pub enum ForgeToken {
    /// A personal, project or App installation token (a Secret's
    /// `password`): GitHub `Authorization: Bearer`, GitLab `PRIVATE-TOKEN`,
    /// Gitea `Authorization: token`.
    Token(String),
    /// An OAuth token (a Secret's `bearerToken`): `Authorization: Bearer`.
    Bearer(String),
}

impl fmt::Debug for ForgeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForgeToken::Token(_) => "Token(<redacted>)",
            ForgeToken::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

impl ForgeToken {
    fn secret(&self) -> &str {
        match self {
            ForgeToken::Token(t) | ForgeToken::Bearer(t) => t,
        }
    }
}

/// One changed value, for the pull request's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeLine {
    pub file: String,
    pub line: usize,
    pub old: String,
    pub new: String,
    /// The marker's setter (`ns:policy`, `ns:policy:tag`).
    pub setter: String,
}

/// A pull request's title and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestText {
    pub title: String,
    pub body: String,
}

/// GitHub takes titles of 256 characters, bodies of 65,536.
const MAX_TITLE: usize = 200;
const MAX_BODY: usize = 60_000;

fn cut_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The title (the commit message's first line) and the body (the rest of
/// the message, then the changes the pull request brings, value by value).
pub fn pull_request_text(message: &str, changes: &[ChangeLine]) -> PullRequestText {
    let mut lines = message.lines();
    let title = lines
        .by_ref()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("Update images from image update automation");
    let rest = lines.collect::<Vec<_>>().join("\n");
    let mut body = rest.trim().to_string();
    if !changes.is_empty() {
        if !body.is_empty() {
            body.push_str("\n\n");
        }
        body.push_str(
            "Image changes:\n\n| file | old | new | policy |\n| --- | --- | --- | --- |\n",
        );
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        for c in changes {
            let row = format!(
                "| `{}:{}` | `{}` | `{}` | `{}` |\n",
                cell(&c.file),
                c.line,
                cell(&c.old),
                cell(&c.new),
                cell(&c.setter)
            );
            if body.len() + row.len() > MAX_BODY {
                body.push_str("| … | | | |\n");
                break;
            }
            body.push_str(&row);
        }
    }
    PullRequestText {
        title: cut_chars(title, MAX_TITLE),
        body: cut_chars(&body, MAX_BODY),
    }
}

/// A pull request opened or updated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// Its page (`html_url`, GitLab's `web_url`).
    pub url: String,
    /// GitHub's and Gitea's number, GitLab's `iid`.
    pub number: u64,
    /// Opened now (else an open one was updated).
    pub opened: bool,
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Call<'a> {
    http: &'a reqwest::Client,
    repo: &'a ForgeRepo,
    token: &'a ForgeToken,
    head: &'a str,
    base: &'a str,
}

impl Call<'_> {
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match (self.repo.kind, self.token) {
            (ForgeKind::GitHub, t) => r
                .bearer_auth(t.secret())
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
            (ForgeKind::GitLab, ForgeToken::Token(t)) => r.header("PRIVATE-TOKEN", t),
            (ForgeKind::Gitea, ForgeToken::Token(t)) => {
                r.header("Authorization", format!("token {t}"))
            }
            (_, ForgeToken::Bearer(t)) => r.bearer_auth(t),
        }
    }

    /// Sends; the status and the JSON body (`Null` when none).
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value, String), ForgeError> {
        let mut r = self.request(method.clone(), url);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.map_err(|e| {
            let e = e.without_url();
            let chain = crate::errors::with_causes(e.to_string(), std::error::Error::source(&e));
            self.fail(&format!("{method} {url} cannot be reached: {chain}"))
        })?;
        let status = resp.status().as_u16();
        let text = super::github::read_capped(resp).await;
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Ok((status, json, text))
    }

    fn fail(&self, what: &str) -> ForgeError {
        ForgeError::Api(format!(
            "{} pull request from {} into {} ({}): {what}",
            self.repo.kind, self.head, self.base, self.repo.path
        ))
    }

    /// An answer that is not a success, with what to check.
    fn refused(&self, method: &str, url: &str, status: u16, text: &str) -> ForgeError {
        let hint = match status {
            401 => {
                "the token was refused: check the token (or the GitHub App) in the GitRepository's Secret"
            }
            403 => {
                "the token may not open pull requests: it needs write access to pull requests (merge requests) of the repository"
            }
            404 => {
                "the repository was not found there: check the forge (imageauto.dev/forge), and that the token can see the repository"
            }
            422 | 409 | 400 => "the forge refused the request: check that the base branch exists",
            _ => "the forge's API did not do it",
        };
        self.fail(&format!(
            "{method} {url}: {status}{}: {hint}",
            said(text, &[self.token.secret()])
        ))
    }
}

fn number(v: &serde_json::Value, key: &str) -> Option<u64> {
    v[key].as_u64()
}

fn page_url(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// Opens a pull request from `head` into `base` with `text`, or updates the
/// one already open from `head` into `base` (its title and body). Never
/// opens a second: the open ones are looked up first, and a creation the
/// forge refuses because one exists (a race) updates that one.
pub async fn open_or_update(
    http: &reqwest::Client,
    repo: &ForgeRepo,
    token: &ForgeToken,
    head: &str,
    base: &str,
    text: &PullRequestText,
) -> Result<PullRequest, ForgeError> {
    let call = Call {
        http,
        repo,
        token,
        head,
        base,
    };
    if head == base {
        return Err(call.fail(
            "the push branch is the base branch: push to another branch (spec.git.push.branch)",
        ));
    }
    if let Some(pr) = find_open(&call).await? {
        return update(&call, pr, text).await;
    }
    let (url, body, key_n, key_url) = match repo.kind {
        ForgeKind::GitHub => (
            format!("{}/repos/{}/pulls", repo.api, repo.path),
            serde_json::json!({"title": text.title, "head": head, "base": base, "body": text.body}),
            "number",
            "html_url",
        ),
        ForgeKind::GitLab => (
            format!(
                "{}/projects/{}/merge_requests",
                repo.api,
                encode(&repo.path)
            ),
            serde_json::json!({"source_branch": head, "target_branch": base, "title": text.title, "description": text.body}),
            "iid",
            "web_url",
        ),
        ForgeKind::Gitea => (
            format!("{}/repos/{}/pulls", repo.api, repo.path),
            serde_json::json!({"head": head, "base": base, "title": text.title, "body": text.body}),
            "number",
            "html_url",
        ),
    };
    let (status, v, raw) = call.send(reqwest::Method::POST, &url, Some(body)).await?;
    if (200..300).contains(&status)
        && let Some(n) = number(&v, key_n)
    {
        return Ok(PullRequest {
            url: page_url(&v, key_url),
            number: n,
            opened: true,
        });
    }
    // One was opened meanwhile (GitHub 422, GitLab and Gitea 409).
    if matches!(status, 409 | 422)
        && let Some(pr) = find_open(&call).await?
    {
        return update(&call, pr, text).await;
    }
    Err(call.refused("POST", &url, status, &raw))
}

/// The open pull request from the head into the base, if any.
async fn find_open(call: &Call<'_>) -> Result<Option<PullRequest>, ForgeError> {
    let repo = call.repo;
    let (head, base) = (call.head, call.base);
    match repo.kind {
        ForgeKind::GitHub => {
            let owner = repo.path.split('/').next().unwrap_or_default();
            let url = format!(
                "{}/repos/{}/pulls?state=open&head={}&base={}&per_page=100",
                repo.api,
                repo.path,
                encode(&format!("{owner}:{head}")),
                encode(base)
            );
            let (status, v, raw) = call.send(reqwest::Method::GET, &url, None).await?;
            if status != 200 {
                return Err(call.refused("GET", &url, status, &raw));
            }
            Ok(v.as_array().into_iter().flatten().find_map(|p| {
                let same = p["head"]["ref"].as_str().is_none_or(|r| r == head)
                    && p["base"]["ref"].as_str().is_none_or(|r| r == base);
                let n = number(p, "number")?;
                same.then(|| PullRequest {
                    url: page_url(p, "html_url"),
                    number: n,
                    opened: false,
                })
            }))
        }
        ForgeKind::GitLab => {
            let url = format!(
                "{}/projects/{}/merge_requests?state=opened&source_branch={}&target_branch={}",
                repo.api,
                encode(&repo.path),
                encode(head),
                encode(base)
            );
            let (status, v, raw) = call.send(reqwest::Method::GET, &url, None).await?;
            if status != 200 {
                return Err(call.refused("GET", &url, status, &raw));
            }
            Ok(v.as_array().into_iter().flatten().find_map(|p| {
                let same = p["source_branch"].as_str() == Some(head)
                    && p["target_branch"].as_str() == Some(base);
                let n = number(p, "iid")?;
                same.then(|| PullRequest {
                    url: page_url(p, "web_url"),
                    number: n,
                    opened: false,
                })
            }))
        }
        ForgeKind::Gitea => {
            // Gitea lists by page; its filters do not take a head branch.
            for page in 1..=20 {
                let url = format!(
                    "{}/repos/{}/pulls?state=open&limit=50&page={page}",
                    repo.api, repo.path
                );
                let (status, v, raw) = call.send(reqwest::Method::GET, &url, None).await?;
                if status != 200 {
                    return Err(call.refused("GET", &url, status, &raw));
                }
                let items = v.as_array().cloned().unwrap_or_default();
                let found = items.iter().find_map(|p| {
                    let same = p["head"]["ref"].as_str() == Some(head)
                        && p["base"]["ref"].as_str() == Some(base);
                    let n = number(p, "number")?;
                    same.then(|| PullRequest {
                        url: page_url(p, "html_url"),
                        number: n,
                        opened: false,
                    })
                });
                if found.is_some() || items.len() < 50 {
                    return Ok(found);
                }
            }
            Ok(None)
        }
    }
}

async fn update(
    call: &Call<'_>,
    pr: PullRequest,
    text: &PullRequestText,
) -> Result<PullRequest, ForgeError> {
    let repo = call.repo;
    let (method, url, body) = match repo.kind {
        ForgeKind::GitHub | ForgeKind::Gitea => (
            reqwest::Method::PATCH,
            format!("{}/repos/{}/pulls/{}", repo.api, repo.path, pr.number),
            serde_json::json!({"title": text.title, "body": text.body}),
        ),
        ForgeKind::GitLab => (
            reqwest::Method::PUT,
            format!(
                "{}/projects/{}/merge_requests/{}",
                repo.api,
                encode(&repo.path),
                pr.number
            ),
            serde_json::json!({"title": text.title, "description": text.body}),
        ),
    };
    let (status, v, raw) = call.send(method.clone(), &url, Some(body)).await?;
    if !(200..300).contains(&status) {
        return Err(call.refused(method.as_str(), &url, status, &raw));
    }
    let key = if repo.kind == ForgeKind::GitLab {
        "web_url"
    } else {
        "html_url"
    };
    let url = Some(page_url(&v, key))
        .filter(|u| !u.is_empty())
        .unwrap_or(pr.url);
    Ok(PullRequest {
        url,
        number: pr.number,
        opened: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHOOSE: &str = "set imageauto.dev/forge";

    #[test]
    fn forges_and_their_apis_from_git_urls() {
        let l = |u: &str, k: Option<ForgeKind>, gh: Option<&str>| locate(u, k, gh, CHOOSE);
        assert_eq!(
            l("https://github.com/org/fleet.git", None, None).unwrap(),
            ForgeRepo {
                kind: ForgeKind::GitHub,
                api: "https://api.github.com".into(),
                path: "org/fleet".into()
            }
        );
        assert_eq!(
            l("ssh://git@github.com/org/fleet", None, None).unwrap().api,
            "https://api.github.com"
        );
        assert_eq!(
            l("git@github.com:org/fleet.git", None, None).unwrap().path,
            "org/fleet"
        );
        // GitHub Enterprise: /api/v3 on the host, or the App's base URL.
        let ghe = l(
            "https://ghe.example.com/org/fleet.git",
            Some(ForgeKind::GitHub),
            None,
        )
        .unwrap();
        assert_eq!(ghe.api, "https://ghe.example.com/api/v3");
        let app = l(
            "https://ghe.example.com/org/fleet.git",
            None,
            Some("https://ghe.example.com/api/v3/"),
        )
        .unwrap();
        assert_eq!(
            (app.kind, app.api.as_str()),
            (ForgeKind::GitHub, "https://ghe.example.com/api/v3")
        );
        // GitLab: the whole path, subgroups too; the port of an http URL stays.
        let gl = l(
            "http://127.0.0.1:8080/group/sub/proj.git",
            Some(ForgeKind::GitLab),
            None,
        )
        .unwrap();
        assert_eq!(
            (gl.api.as_str(), gl.path.as_str()),
            ("http://127.0.0.1:8080/api/v4", "group/sub/proj")
        );
        assert_eq!(
            l("https://gitlab.com/a/b", None, None).unwrap().kind,
            ForgeKind::GitLab
        );
        // An SSH port is not the API's.
        let ssh = l(
            "ssh://git@gitea.example.com:2222/o/r.git",
            Some(ForgeKind::Gitea),
            None,
        )
        .unwrap();
        assert_eq!(ssh.api, "https://gitea.example.com/api/v1");
        assert_eq!(
            l("https://codeberg.org/o/r.git", None, None).unwrap().kind,
            ForgeKind::Gitea
        );
        let e = l("https://git.example.com/o/r.git", None, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot tell which forge serves git.example.com")
        );
        assert!(e.to_string().contains(CHOOSE), "{e}");
        // Credentials in the URL never reach a message.
        let e = l(
            "https://tok3n-s3cret@git.example.com/r.git",
            Some(ForgeKind::Gitea),
            None,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("tok3n"), "{e}");
        assert_eq!(ForgeKind::parse("Forgejo"), Some(ForgeKind::Gitea));
        assert_eq!(ForgeKind::parse("bitbucket"), None);
    }

    #[test]
    fn the_title_and_body_come_from_the_message_and_the_changes() {
        let changes = vec![ChangeLine {
            file: "apps/web.yaml".into(),
            line: 10,
            old: "ghcr.io/org/web:1.0.0".into(),
            new: "ghcr.io/org/web:1.1.0".into(),
            setter: "apps:web".into(),
        }];
        let t = pull_request_text("Update web\n\nBumped by automation.\n", &changes);
        assert_eq!(t.title, "Update web");
        assert_eq!(
            t.body,
            "Bumped by automation.\n\nImage changes:\n\n| file | old | new | policy |\n| --- | --- | --- | --- |\n| `apps/web.yaml:10` | `ghcr.io/org/web:1.0.0` | `ghcr.io/org/web:1.1.0` | `apps:web` |\n"
        );
        let t = pull_request_text("", &[]);
        assert_eq!(t.title, "Update images from image update automation");
        assert_eq!(t.body, "");
        let long = "x".repeat(500);
        assert_eq!(
            pull_request_text(&long, &[]).title.chars().count(),
            MAX_TITLE
        );
    }

    #[test]
    fn tokens_do_not_show() {
        assert_eq!(
            format!("{:?}", ForgeToken::Token("ghs_s3cret".into())),
            "Token(<redacted>)"
        );
        assert_eq!(encode("git/fleet"), "git%2Ffleet");
    }
}
