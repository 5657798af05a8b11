//! Messages the library logs (a registry asking to wait, say) on standard
//! error, in the command line's own style: `warning: ...`.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Prints an event's message as `warning: MESSAGE` (or `error:`, `note:`),
/// made printable; structured fields are for the server's logs, not here.
struct Plain;

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut m = Message(String::new());
        event.record(&mut m);
        let word = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            _ => "note",
        };
        writeln!(writer, "{word}: {}", crate::output::printable(&m.0))
    }
}

/// Sends warnings and errors of imageauto's own code to standard error
/// (the libraries it uses report through its errors instead).
pub fn init_cli() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target("automation", Level::WARN)
        .with_target("webhook", Level::WARN)
        .with_target("kubectl_imageauto", Level::WARN);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .event_format(Plain),
        )
        .with(ours)
        .try_init();
}

/// Targets of the libraries whose own lines the server's say better,
/// kept to errors (unless `RUST_LOG` names them):
/// - kube's TLS client logs "Server cert bypassed" at every connection to
///   an apiserver whose kubeconfig sets `insecure-skip-tls-verify`, dozens
///   of lines at start, one per watch; `serve` says it once instead;
/// - kube's watcher logs a refused list or watch with the debug dump of the
///   apiserver's Status; `serve` logs the message and code of the refusal.
const QUIETED: [&str; 2] = ["kube_client::client::tls", "kube_runtime::watcher"];

/// Logs of the server: JSON lines (or text) on standard error, at info
/// unless `RUST_LOG` says otherwise (see [`QUIETED`]).
pub fn init_server(json: bool) {
    let from_env = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_runtime=warn,kube_client=warn,hyper=warn")
    });
    for target in QUIETED {
        if !from_env.contains(target)
            && let Ok(d) = format!("{target}=error").parse()
        {
            filter = filter.add_directive(d);
        }
    }
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
