//! The one reconcile shell of every kind: it does all the I/O around a
//! kind's pure `decide`. Flux's finalizer (`finalizers.fluxcd.io`) through
//! `kube::runtime::finalizer`, the snapshot, the work `decide` asks for,
//! then the status by server-side apply under the field manager
//! `imageauto` (a field left out is removed), the events, the metrics and
//! the requeue with backoff.

use super::decision::{Decision, Requeue, Step};
use super::watches::{CacheChange, Shared};
use super::{Context, Error, FIELD_MANAGER};
use crate::api::{FINALIZER, RECONCILE_REQUEST_ANNOTATION, ResourceExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A kind the shell reconciles: its pure decision, and the I/O that feeds
/// it.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status: Serialize + Clone + PartialEq + Default + Debug + Send + Sync>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// What `decide` reads besides the object.
    type Snapshot: Send;
    /// What `decide` may ask the shell to do before it decides.
    type Work: Send;

    /// The kind's shared cache (to notice a deletion during the work).
    fn cache(ctx: &Context) -> Option<Arc<Shared<Self>>>;

    /// Whether this process reconciles the object at all.
    fn handled(&self) -> bool {
        true
    }

    /// Whether objects of the kind carry Flux's finalizer.
    fn finalized() -> bool {
        true
    }

    /// What the object depends on, from the caches (and the tag store).
    fn snapshot(&self, ctx: &Context) -> impl Future<Output = Self::Snapshot> + Send;

    /// The pure decision.
    fn decide(&self, snap: &Self::Snapshot, now: &Time) -> Step<Self::Work, Self::Status>;

    /// Does `work` and puts its result into `snap`.
    fn work(
        &self,
        ctx: &Context,
        snap: &mut Self::Snapshot,
        work: Self::Work,
    ) -> impl Future<Output = ()> + Send;

    /// What goes with the object when it is deleted (before the finalizer
    /// is released).
    fn cleanup(&self, _ctx: &Context) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// `ns/name` of an object.
pub fn key<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The reconcile request an object carries, if any.
pub fn requested_at<K: ResourceExt>(obj: &K) -> Option<String> {
    obj.annotations().get(RECONCILE_REQUEST_ANNOTATION).cloned()
}

/// The time from `since` to `now` (none when `since` is unknown; zero when
/// it lies ahead).
pub fn elapsed(since: &Option<Time>, now: &Time) -> Option<Duration> {
    let since = since.as_ref()?;
    let d = now.0.duration_since(since.0);
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

/// How many times `decide` may ask for work in one reconciliation (each
/// kind asks once; more is a bug, not a loop).
const MAX_STEPS: usize = 4;

/// Reconciles one object of kind `K`.
pub async fn reconcile<K: Kind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !obj.handled() {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    // The finalizer helper wants an Action: the failure reason travels
    // beside it.
    let failed: std::sync::Mutex<Option<&'static str>> = std::sync::Mutex::new(None);
    let result = if K::finalized() {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        let (ctx2, failed2) = (&ctx, &failed);
        finalizer(&api, FINALIZER, obj.clone(), |event| async move {
            match event {
                Finalize::Apply(o) => {
                    let (action, failure) = apply(o, ctx2).await?;
                    if let Ok(mut f) = failed2.lock() {
                        *f = failure;
                    }
                    Ok(action)
                }
                Finalize::Cleanup(o) => {
                    o.cleanup(ctx2).await;
                    ctx2.forget(&key(o.as_ref()));
                    Ok(Action::await_change())
                }
            }
        })
        .await
        .map_err(|e| match e {
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
            kube::runtime::finalizer::Error::AddFinalizer(source) => Error::Kube {
                kind: K::KIND,
                object: key(obj.as_ref()),
                action: "add the finalizer",
                source,
            },
            kube::runtime::finalizer::Error::RemoveFinalizer(source) => Error::Kube {
                kind: K::KIND,
                object: key(obj.as_ref()),
                action: "remove the finalizer",
                source,
            },
            other => Error::Finalizer {
                kind: K::KIND,
                object: key(obj.as_ref()),
                source: Box::new(other),
            },
        })
        .map(|a| (a, failed.lock().ok().and_then(|f| *f)))
    } else {
        apply(obj.clone(), &ctx).await
    };
    let failure = match &result {
        Ok((_, f)) => *f,
        Err(_) => Some("StatusWriteFailed"),
    };
    ctx.metrics.reconciled(K::KIND, started.elapsed(), failure);
    tracing::debug!(kind = K::KIND, object = %key(obj.as_ref()), "reconciled");
    result.map(|(a, _)| a)
}

/// The object's reconciliation, once its finalizer is in place.
async fn apply<K: Kind>(
    obj: Arc<K>,
    ctx: &Context,
) -> Result<(Action, Option<&'static str>), Error> {
    let mut snap = obj.snapshot(ctx).await;
    let mut steps = 0;
    // The status as the cluster holds it now.
    let mut live = obj.status().cloned().unwrap_or_default();
    let decision: Decision<K::Status> = loop {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let (progress, work) = match obj.decide(&snap, &now) {
            Step::Done(d) => break d,
            Step::Work(w) => (None, w),
            Step::Persist(p, w) => (Some(p), w),
        };
        if steps >= MAX_STEPS {
            return Err(Error::Endless {
                kind: K::KIND,
                object: key(obj.as_ref()),
            });
        }
        steps += 1;
        // Flux writes what it is doing before it does it.
        if let Some(p) = progress
            && p != live
        {
            write_status(ctx, obj.as_ref(), &p).await?;
            live = p;
        }
        // A deletion does not wait for the work (a scan of a registry that
        // never answers): the work is dropped, and the deletion is handled
        // next.
        let deleted = tokio::select! {
            () = obj.work(ctx, &mut snap, work) => false,
            () = deletion(K::cache(ctx), obj.as_ref()) => true,
        };
        if deleted {
            return Ok((Action::await_change(), None));
        }
    };
    if decision.status != live {
        write_status(ctx, obj.as_ref(), &decision.status).await?;
    }
    for note in &decision.notes {
        ctx.event(obj.as_ref(), note).await;
    }
    let k = key(obj.as_ref());
    if decision.failure.is_none() {
        ctx.forget(&k);
    }
    let action = match decision.requeue {
        Requeue::After(d) => Action::requeue(d.max(Duration::from_secs(1))),
        Requeue::Around(d) => Action::requeue(super::jitter(d)),
        Requeue::Never => Action::await_change(),
        Requeue::Backoff => Action::requeue(ctx.backoff(&k)),
        Requeue::BackoffAtLeast(i) => Action::requeue(super::jitter(i.max(ctx.backoff(&k)))),
    };
    Ok((action, decision.failure))
}

/// Resolves once `obj` (this uid) is being deleted or is gone, as `cache`
/// sees it; never without a cache.
async fn deletion<K: Kind>(cache: Option<Arc<Shared<K>>>, obj: &K) {
    let Some(cache) = cache else {
        return std::future::pending().await;
    };
    let (ns, name, uid) = (
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
        obj.uid(),
    );
    let mut changes = cache.subscribe();
    let going = |o: Option<Arc<K>>| {
        o.is_none_or(|o| o.uid() != uid || o.meta().deletion_timestamp.is_some())
    };
    if going(cache.get(&ns, &name)) {
        return;
    }
    loop {
        match changes.recv().await {
            Ok(CacheChange::Applied(o))
                if o.uid() == uid && o.meta().deletion_timestamp.is_some() =>
            {
                return;
            }
            Ok(CacheChange::Deleted(o)) if o.uid() == uid => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                if going(cache.get(&ns, &name)) {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return std::future::pending().await;
            }
        }
    }
}

/// Writes the whole status by server-side apply under [`FIELD_MANAGER`]:
/// a field this manager set before and leaves out now is removed. A field
/// another manager set (Flux's controller, before a take-over) is not
/// touched by an apply: what remains of those afterwards is removed with a
/// merge patch, so the status is exactly the one decided.
pub async fn write_status<K: Kind>(
    ctx: &Context,
    obj: &K,
    status: &K::Status,
) -> Result<(), Error> {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let fail = |action, source| Error::Kube {
        kind: K::KIND,
        object: format!("{ns}/{name}"),
        action,
        source,
    };
    let want = serde_json::to_value(status).map_err(|source| Error::Encode {
        kind: K::KIND,
        object: format!("{ns}/{name}"),
        source,
    })?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": want,
    });
    let applied = match api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(o) => o,
        // Deleted meanwhile: nothing to write to.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(fail("apply the status", e)),
    };
    let got = serde_json::to_value(&applied)
        .ok()
        .and_then(|v| v.get("status").cloned())
        .unwrap_or(serde_json::Value::Null);
    if let Some(patch) = merge_patch(&got, &want) {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        api.patch_status(
            &name,
            &pp,
            &Patch::Merge(serde_json::json!({ "status": patch })),
        )
        .await
        .map_err(|e| fail("clear the status", e))?;
    }
    Ok(())
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`; `None`
/// when they are equal.
pub fn merge_patch(from: &serde_json::Value, to: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    if from == to {
        return None;
    }
    match (from, to) {
        (Value::Object(f), Value::Object(t)) => {
            let mut out = serde_json::Map::new();
            for (k, fv) in f {
                match t.get(k) {
                    None => {
                        out.insert(k.clone(), Value::Null);
                    }
                    Some(tv) => {
                        if let Some(p) = merge_patch(fv, tv) {
                            out.insert(k.clone(), p);
                        }
                    }
                }
            }
            for (k, tv) in t {
                if !f.contains_key(k) {
                    out.insert(k.clone(), tv.clone());
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        _ => Some(to.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_merge_patch_removes_what_the_decision_left_out() {
        let from = json!({
            "latestRef": {"name": "ghcr.io/org/web", "tag": "1.2.0", "digest": "sha256:old"},
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Foreign", "status": "True"}]
        });
        let to = json!({
            "latestRef": {"name": "ghcr.io/org/web", "tag": "1.2.0"},
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True"}]
        });
        assert_eq!(
            merge_patch(&from, &to),
            Some(json!({
                "latestRef": {"digest": null},
                "conditions": [{"type": "Ready", "status": "True"}]
            }))
        );
        assert_eq!(merge_patch(&to, &to), None);
        // Applied to `from`, the patch gives `to`.
        fn apply(doc: &mut serde_json::Value, patch: &serde_json::Value) {
            match (doc, patch) {
                (serde_json::Value::Object(d), serde_json::Value::Object(p)) => {
                    for (k, v) in p {
                        if v.is_null() {
                            d.remove(k);
                        } else {
                            apply(d.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                        }
                    }
                }
                (d, p) => *d = p.clone(),
            }
        }
        let mut doc = from.clone();
        apply(&mut doc, &merge_patch(&from, &to).unwrap());
        assert_eq!(doc, to);
    }

    #[test]
    fn elapsed_time() {
        let t0 = crate::controller::testing::at(0);
        let t1 = crate::controller::testing::at(90);
        assert_eq!(
            elapsed(&Some(t0.clone()), &t1),
            Some(Duration::from_secs(90))
        );
        assert_eq!(elapsed(&Some(t1), &t0), Some(Duration::ZERO));
        assert_eq!(elapsed(&None, &t0), None);
    }
}
