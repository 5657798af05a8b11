//! Leader election (`imageauto_server::controller::lease`) against a real
//! apiserver: one leader at a time, a leader cut off from the apiserver
//! stops (and its fence turns false) before another takes over, a foreign
//! write is never overwritten, and a stopping leader hands over at once.
//!
//! Short timing (lease 4 s, renew deadline 3 s, retry 500 ms); the electors
//! run on a tokio runtime of their own while the test thread samples their
//! state every 50 ms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use imageauto_server::controller::lease::{Elector, LeaseConfig, LeaseError, LeaseFence};
use imageauto_tests::kube::Cluster;
use imageauto_tests::proxy::Proxy;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const DURATION: Duration = Duration::from_secs(4);
const RENEW_DEADLINE: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(500);
const SAMPLE: Duration = Duration::from_millis(50);
/// Room for scheduling and sampling on a busy machine.
const SLACK: Duration = Duration::from_millis(250);

fn runtime() -> Runtime {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "imageauto_server::controller::lease=debug".into()),
        )
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn config(namespace: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: namespace.to_string(),
        name: "imageauto-test".to_string(),
        identity: identity.to_string(),
        duration: DURATION,
        renew_deadline: RENEW_DEADLINE,
        retry_period: RETRY,
    }
}

/// A client of user `context` (`admin` or `viewer`), straight to the
/// apiserver or through `via`. The certificate names 127.0.0.1, which the
/// proxy's address also is: TLS verifies as without it.
fn client(rt: &Runtime, cluster: &Cluster, context: &str, via: Option<&Proxy>) -> kube::Client {
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
        let options = kube::config::KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap();
        if let Some(p) = via {
            config.cluster_url = format!("https://{}", p.addr()).parse().unwrap();
        }
        kube::Client::try_from(config).unwrap()
    })
}

fn apiserver(cluster: &Cluster) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cluster.port))
}

/// An elector running on `rt`.
struct Replica {
    name: &'static str,
    leading: watch::Receiver<bool>,
    fence: LeaseFence,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), LeaseError>>>,
}

impl Replica {
    fn start(rt: &Runtime, name: &'static str, client: kube::Client, config: LeaseConfig) -> Self {
        let elector = Elector::new(client, config);
        let leading = elector.leading();
        let fence = elector.fence();
        let (stop, stop_rx) = watch::channel(false);
        let task = Some(rt.spawn(elector.run(stop_rx)));
        Replica {
            name,
            leading,
            fence,
            stop,
            task,
        }
    }

    fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// Stops it and waits (up to 5 s) for `run` to return.
    fn stop(&mut self, rt: &Runtime) -> Result<(), LeaseError> {
        let _ = self.stop.send(true);
        let task = self.task.take().expect("running");
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await })
            .expect("run returns within 5 s of stop")
            .expect("run does not panic")
    }
}

/// One look at the replicas: (leading, fence holds), leading read first
/// (an elector clears its fence before it stops signalling leadership).
#[derive(Clone, Copy, Debug)]
struct Look {
    leads: bool,
    holds: bool,
}

fn look(replicas: &[&Replica]) -> Vec<Look> {
    replicas
        .iter()
        .map(|r| {
            let leads = r.leads();
            let holds = r.fence.leads();
            Look { leads, holds }
        })
        .collect()
}

/// Samples every 50 ms until `done` says so (or panics after `timeout`),
/// checking at every sample that at most one replica leads and at most one
/// fence holds. Returns the time `done` became true.
fn sample_until(
    replicas: &[&Replica],
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(Instant, &[Look]) -> bool,
) -> Instant {
    let start = Instant::now();
    loop {
        let now = Instant::now();
        let looks = look(replicas);
        let leaders: Vec<&str> = replicas
            .iter()
            .zip(&looks)
            .filter(|(_, l)| l.leads)
            .map(|(r, _)| r.name)
            .collect();
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        let fenced: Vec<&str> = replicas
            .iter()
            .zip(&looks)
            .filter(|(_, l)| l.holds)
            .map(|(r, _)| r.name)
            .collect();
        assert!(fenced.len() <= 1, "two fences hold at once: {fenced:?}");
        if done(now, &looks) {
            return now;
        }
        assert!(
            now.duration_since(start) < timeout,
            "{what}: not after {timeout:?} ({looks:?})"
        );
        std::thread::sleep(SAMPLE);
    }
}

/// Samples for `d` (see [`sample_until`]), calling `each` at every sample.
fn sample_for(replicas: &[&Replica], d: Duration, mut each: impl FnMut(&[Look])) {
    let end = Instant::now() + d;
    sample_until(
        replicas,
        d + Duration::from_secs(1),
        "sampling",
        |now, looks| {
            each(looks);
            now >= end
        },
    );
}

fn lease(rt: &Runtime, admin: &kube::Client, namespace: &str) -> Lease {
    let api: Api<Lease> = Api::namespaced(admin.clone(), namespace);
    rt.block_on(api.get("imageauto-test")).unwrap()
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

fn renew_time(lease: &Lease) -> MicroTime {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.clone())
        .expect("a renewTime")
}

#[test]
fn lease_one_leader_among_two() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("lease-one");
    let rt = runtime();
    let admin = client(&rt, cluster, "admin", None);
    // Both start together: both find no Lease, one creates it.
    let a = Replica::start(&rt, "a", admin.clone(), config(&ns, "a"));
    let b = Replica::start(&rt, "b", admin.clone(), config(&ns, "b"));
    let both = [&a, &b];
    sample_until(&both, Duration::from_secs(5), "a leader", |_, l| {
        l.iter().any(|l| l.leads)
    });
    let (leader, follower) = if a.leads() { (&a, &b) } else { (&b, &a) };
    let first = lease(&rt, &admin, &ns);
    assert_eq!(holder(&first).as_deref(), Some(leader.name));
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(4));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.acquire_time.is_some());

    // Longer than the lease duration: the leader renews, the follower
    // never takes over, and exactly one leads at every sample.
    sample_for(&both, DURATION + Duration::from_secs(1), |l| {
        assert_eq!(l.iter().filter(|l| l.leads).count(), 1, "{l:?}");
    });
    assert!(leader.leads() && leader.fence.leads());
    assert!(!follower.leads() && !follower.fence.leads());
    let later = lease(&rt, &admin, &ns);
    assert_eq!(holder(&later).as_deref(), Some(leader.name));
    assert!(renew_time(&later) > renew_time(&first), "renewed");
    assert_eq!(later.spec.as_ref().unwrap().acquire_time, spec.acquire_time);
    assert_eq!(later.spec.as_ref().unwrap().lease_transitions, Some(0));
}

#[test]
fn lease_partitioned_leader_steps_down_before_takeover() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("lease-cut");
    let rt = runtime();
    let admin = client(&rt, cluster, "admin", None);
    let proxy = Proxy::start(apiserver(cluster));
    let a = Replica::start(
        &rt,
        "a",
        client(&rt, cluster, "admin", Some(&proxy)),
        config(&ns, "a"),
    );
    sample_until(&[&a], Duration::from_secs(5), "a leads", |_, l| l[0].leads);
    let b = Replica::start(&rt, "b", admin.clone(), config(&ns, "b"));
    let both = [&a, &b];
    // b reads the Lease a few times (and a renews meanwhile).
    sample_for(&both, Duration::from_secs(1), |l| {
        assert!(l[0].leads && !l[1].leads, "{l:?}");
    });

    proxy.cut();
    let cut = Instant::now();
    let (mut fence_off, mut stepped_down) = (None, None);
    let took_over = sample_until(
        &both,
        DURATION + RETRY * 4 + Duration::from_secs(2),
        "b takes over",
        |now, l| {
            if !l[0].holds && fence_off.is_none() {
                fence_off = Some(now);
            }
            if !l[0].leads && stepped_down.is_none() {
                stepped_down = Some(now);
            }
            if !l[0].leads {
                // The fence never outlives the leadership.
                assert!(!l[0].holds, "a's fence holds while a does not lead");
            }
            l[1].leads
        },
    );
    let fence_off = fence_off.expect("a's fence turned false") - cut;
    let stepped_down = stepped_down.expect("a stopped leading") - cut;
    let took_over = took_over - cut;
    eprintln!(
        "after the cut: a's fence off at {fence_off:?}, a stopped leading at \
         {stepped_down:?}, b leads at {took_over:?}"
    );
    assert!(fence_off <= stepped_down);
    assert!(
        stepped_down <= RENEW_DEADLINE + RETRY,
        "a stopped leading {stepped_down:?} after the cut"
    );
    assert!(
        took_over >= stepped_down + Duration::from_millis(500),
        "b took over {took_over:?} after the cut, a stopped at {stepped_down:?}"
    );
    assert!(
        took_over <= DURATION + RETRY * 3 + SLACK,
        "b took over {took_over:?} after the cut"
    );
    let now = lease(&rt, &admin, &ns);
    assert_eq!(holder(&now).as_deref(), Some("b"));
    assert_eq!(now.spec.as_ref().unwrap().lease_transitions, Some(1));

    // Healed: a reads the Lease again and finds b renewing it, for longer
    // than a lease duration.
    proxy.heal();
    sample_for(&both, DURATION + Duration::from_secs(1), |l| {
        assert!(!l[0].leads && !l[0].holds, "a leads again: {l:?}");
        assert!(l[1].leads, "b stopped leading: {l:?}");
    });
    // a is alive and reaches the apiserver: it takes over once b leaves.
    let mut b = b;
    let stopped = Instant::now();
    b.stop(&rt).unwrap();
    let again = sample_until(&[&a, &b], DURATION, "a leads again", |_, l| l[0].leads);
    assert!(again - stopped < DURATION, "a took over after a release");
}

#[test]
fn lease_foreign_holder_is_never_overwritten() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("lease-conflict");
    let rt = runtime();
    let admin = client(&rt, cluster, "admin", None);
    let a = Replica::start(&rt, "a", admin.clone(), config(&ns, "a"));
    sample_until(&[&a], Duration::from_secs(5), "a leads", |_, l| l[0].leads);

    // Someone else writes the Lease (a plain replace with the current
    // resourceVersion): a's next renewal carries a stale one.
    let api: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    let written = rt.block_on(async {
        loop {
            let mut l = api.get("imageauto-test").await.unwrap();
            let spec = l.spec.as_mut().unwrap();
            spec.holder_identity = Some("intruder".into());
            spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
            spec.lease_duration_seconds = Some(4);
            spec.lease_transitions = Some(1);
            match api
                .replace("imageauto-test", &PostParams::default(), &l)
                .await
            {
                Ok(_) => break Instant::now(),
                // a renewed between the read and the write: again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => panic!("replace: {e}"),
            }
        }
    });
    let stepped_down = sample_until(&[&a], RETRY * 3, "a stops leading", |_, l| !l[0].leads);
    assert!(!a.fence.leads());
    eprintln!(
        "a stopped leading {:?} after the write",
        stepped_down - written
    );
    // a did not overwrite it, and waits the intruder's lease duration.
    assert_eq!(
        holder(&lease(&rt, &admin, &ns)).as_deref(),
        Some("intruder")
    );
    let again = sample_until(
        &[&a],
        DURATION + RETRY * 3 + SLACK,
        "a takes the expired Lease",
        |_, l| l[0].leads,
    );
    let after = again - written;
    eprintln!("a leads again {after:?} after the write");
    assert!(after >= DURATION, "a took over after {after:?}");
    let now = lease(&rt, &admin, &ns);
    assert_eq!(holder(&now).as_deref(), Some("a"));
    assert_eq!(now.spec.as_ref().unwrap().lease_transitions, Some(2));
}

#[test]
fn lease_foreign_write_that_keeps_the_holder_keeps_leading() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("lease-annotate");
    let rt = runtime();
    let admin = client(&rt, cluster, "admin", None);
    let a = Replica::start(&rt, "a", admin.clone(), config(&ns, "a"));
    sample_until(&[&a], Duration::from_secs(5), "a leads", |_, l| l[0].leads);
    // kubectl writes the Lease: a renewal with the resourceVersion a knew
    // meets a conflict, the Lease still names a, a renews with the new one.
    cluster.kubectl_ok(&[
        "annotate",
        "-n",
        &ns,
        "lease/imageauto-test",
        "example.com/note=kept",
    ]);
    let annotated = lease(&rt, &admin, &ns);
    sample_for(&[&a], Duration::from_secs(2), |l| {
        assert!(l[0].leads && l[0].holds, "{l:?}");
    });
    let now = lease(&rt, &admin, &ns);
    assert_eq!(holder(&now).as_deref(), Some("a"));
    assert!(renew_time(&now) > renew_time(&annotated), "renewed since");
    assert_eq!(
        now.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("example.com/note"))
            .map(String::as_str),
        Some("kept")
    );
}

#[test]
fn lease_released_on_stop_is_taken_at_once() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("lease-release");
    let rt = runtime();
    let admin = client(&rt, cluster, "admin", None);
    let mut a = Replica::start(&rt, "a", admin.clone(), config(&ns, "a"));
    sample_until(&[&a], Duration::from_secs(5), "a leads", |_, l| l[0].leads);
    let b = Replica::start(&rt, "b", admin.clone(), config(&ns, "b"));
    sample_for(&[&a, &b], Duration::from_secs(1), |l| {
        assert!(l[0].leads && !l[1].leads, "{l:?}");
    });

    let stopped = Instant::now();
    a.stop(&rt).unwrap();
    assert!(!a.leads() && !a.fence.leads());
    let released = Instant::now() - stopped;
    let took_over = sample_until(&[&a, &b], DURATION, "b leads", |_, l| l[1].leads) - stopped;
    eprintln!("a returned {released:?} after stop, b leads {took_over:?} after");
    assert!(released < RETRY, "releasing took {released:?}");
    assert!(
        took_over < RETRY * 3 + SLACK,
        "b took over {took_over:?} after a stopped"
    );
    let now = lease(&rt, &admin, &ns);
    assert_eq!(holder(&now).as_deref(), Some("b"));
    assert_eq!(now.spec.as_ref().unwrap().lease_transitions, Some(1));
}

#[test]
fn lease_aborted_leader_stops_leading_without_release() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("lease-abort");
    let rt = runtime();
    let admin = client(&rt, cluster, "admin", None);
    let mut a = Replica::start(&rt, "a", admin.clone(), config(&ns, "a"));
    sample_until(&[&a], Duration::from_secs(5), "a leads", |_, l| l[0].leads);
    let task = a.task.take().unwrap();
    task.abort();
    let _ = rt.block_on(task);
    assert!(!a.leads() && !a.fence.leads());
    assert_eq!(holder(&lease(&rt, &admin, &ns)).as_deref(), Some("a"));
}

#[test]
fn lease_forbidden_is_an_error() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("lease-rbac");
    let rt = runtime();
    // `viewer` has no roles.
    let viewer = client(&rt, cluster, "viewer", None);
    let elector = Elector::new(viewer, config(&ns, "v"));
    let (_stop, stop_rx) = watch::channel(false);
    let result = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), elector.run(stop_rx)).await
    });
    let e = result.expect("run returns at once").expect_err("a refusal");
    let text = e.to_string();
    assert!(
        matches!(e, LeaseError::Forbidden { verb: "get", .. }),
        "{text}"
    );
    assert!(
        text.contains(&format!("cannot get leases.coordination.k8s.io in {ns}")),
        "{text}"
    );
    assert!(text.contains(&format!("{ns}/imageauto-test")), "{text}");
    assert!(!text.contains("Status {"), "{text}");
}

#[test]
fn lease_proxy_cuts_and_heals() {
    // An echo server behind the proxy.
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in echo.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start(target);
    let ask = |conn: &mut TcpStream, what: &[u8]| -> Option<Vec<u8>> {
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        conn.write_all(what).unwrap();
        let mut buf = vec![0u8; what.len()];
        conn.read_exact(&mut buf).ok().map(|()| buf)
    };
    let mut old = TcpStream::connect(proxy.addr()).unwrap();
    assert_eq!(ask(&mut old, b"one").as_deref(), Some(&b"one"[..]));

    proxy.cut();
    assert!(proxy.is_cut());
    assert_eq!(ask(&mut old, b"two"), None, "a cut line carries nothing");
    let mut new = TcpStream::connect(proxy.addr()).expect("accepted while cut");
    assert_eq!(ask(&mut new, b"three"), None);

    proxy.heal();
    // The held bytes flow now, in order.
    let mut buf = [0u8; 3];
    old.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    old.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"two");
    new.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 5];
    new.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"three");
    assert_eq!(ask(&mut old, b"four").as_deref(), Some(&b"four"[..]));
    assert_eq!(proxy.accepted(), 2);

    // Dropped: it stops listening.
    let addr = proxy.addr();
    drop(proxy);
    let refused = TcpStream::connect(addr)
        .and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_millis(500)))?;
            c.write_all(b"x")?;
            let mut b = [0u8; 1];
            c.read(&mut b)
        })
        .map_or(true, |n| n == 0);
    assert!(refused, "the proxy still answers after drop");
}
