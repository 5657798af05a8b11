//! `tree`: an automation, its GitRepository, its policies and their repositories.

use super::*;

#[derive(clap::Args, Debug)]
pub struct TreeArgs {
    /// update, and the automation's NAME
    #[arg(value_name = "KIND NAME", required = true)]
    words: Vec<String>,
    /// Output format: text, or json (Flux's `tree -o json` shape, with each object's Ready state)
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: crate::output::TextOrJson,
    #[command(flatten)]
    kube: KubeArgs,
}

fn mark(ready: &str) -> &'static str {
    match ready {
        "True" => "✔",
        "False" => "✗",
        _ => "…",
    }
}

/// An object of a tree and what it depends on.
struct Node {
    group: &'static str,
    kind: &'static str,
    namespace: String,
    name: String,
    /// Its Ready status and message; `None` when it was not found, or
    /// could not be read (the message says why).
    ready: Option<String>,
    message: String,
    /// A GitRepository's URL.
    url: Option<String>,
    children: Vec<Node>,
}

impl Node {
    fn new(group: &'static str, kind: &'static str, namespace: &str, name: &str) -> Node {
        Node {
            group,
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            ready: None,
            message: "not found".into(),
            url: None,
            children: Vec::new(),
        }
    }

    /// The node with the state of the object of kind `K` it names, and the
    /// object; as it is when there is none, with why when it cannot be read.
    async fn read<K: kube::Resource<DynamicType = ()>>(
        self,
        client: &kube::Client,
    ) -> Result<(Node, Option<Value>)> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &self.namespace,
            &ApiResource::erase::<K>(&()),
        );
        Ok(match api.get_opt(&self.name).await {
            Ok(Some(o)) => {
                let v = serde_json::to_value(&o)?;
                (self.with_state(&v), Some(v))
            }
            Ok(None) => (self, None),
            Err(e) => (
                Node {
                    message: explain(e, "reading it").to_string(),
                    ..self
                },
                None,
            ),
        })
    }

    fn with_state(mut self, v: &Value) -> Node {
        let (r, m) = ready_of(v);
        self.ready = Some(r);
        self.message = m;
        self
    }

    /// The node as Flux's `tree -o json` writes it (`resource` with
    /// Namespace, Name and GroupKind; `resources` for what it depends on),
    /// with its Ready state.
    fn json(&self) -> Value {
        let mut v = serde_json::json!({
            "resource": {
                "Namespace": self.namespace,
                "Name": self.name,
                "GroupKind": {"Group": self.group, "Kind": self.kind}
            },
            "ready": self.ready,
            "message": self.message,
        });
        if let Some(u) = &self.url {
            v["url"] = Value::String(u.clone());
        }
        if !self.children.is_empty() {
            v["resources"] = Value::Array(self.children.iter().map(Node::json).collect());
        }
        v
    }

    fn line(&self) -> String {
        let mark = match self.ready.as_deref() {
            Some(r) => mark(r),
            None if self.message == "not found" => "✗",
            None => "?",
        };
        let url = self
            .url
            .as_ref()
            .map(|u| format!("  {u}"))
            .unwrap_or_default();
        format!(
            "{mark} {}/{}/{}{url}  {}",
            self.kind,
            self.namespace,
            self.name,
            printable(&self.message)
        )
    }
}

const IMAGE_GROUP: &str = "image.toolkit.fluxcd.io";
const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";

pub fn tree(args: TreeArgs) -> Result<Exit> {
    let words = Words::of(&args.words);
    let (kind, name) = words.kind_and_name("tree", "update");
    if ImageKind::parse(&kind)? != ImageKind::Update {
        bail!("tree shows an automation: tree update NAME");
    }
    crate::cmd::runtime()?.block_on(async {
        let k = args.kube.connect().await?;
        let ns = k.namespace.clone();
        let autos: Api<ImageUpdateAutomation> = Api::namespaced(k.client.clone(), &ns);
        let what = format!("ImageUpdateAutomation {ns}/{name}");
        let a = match autos.get(&name).await {
            Ok(a) => a,
            Err(e) => {
                return Err(not_found(
                    &k,
                    &ImageKind::Update.resource(),
                    ImageKind::Update.name(),
                    &name,
                    e,
                )
                .await);
            }
        };
        let av = serde_json::to_value(&a)?;
        let mut root = Node::new(IMAGE_GROUP, "ImageUpdateAutomation", &ns, &name).with_state(&av);
        let sns = a
            .spec
            .source_ref
            .namespace
            .clone()
            .unwrap_or_else(|| ns.clone());
        let sname = a.spec.source_ref.name.clone();
        let source = Node::new(SOURCE_GROUP, "GitRepository", &sns, &sname);
        let (mut source, found) = source.read::<GitRepository>(&k.client).await?;
        if let Some(sv) = found {
            source.url = Some(sv["spec"]["url"].as_str().unwrap_or("").to_string());
        }
        root.children.push(source);
        let policies: Api<ImagePolicy> = Api::namespaced(k.client.clone(), &ns);
        let list = policies
            .list(&ListParams::default())
            .await
            .map_err(|e| explain(e, "listing ImagePolicies"))?
            .items;
        let selected = automation::api::plan::selected_policies(&a.spec, &ns, &list)
            .map_err(|e| anyhow!("{what}: {e}"))?;
        for p in selected {
            let pv = serde_json::to_value(p)?;
            let mut pn = Node::new(IMAGE_GROUP, "ImagePolicy", &ns, &p.name_any()).with_state(&pv);
            let (rns, rname) = automation::api::plan::repository_of(p);
            let rn = Node::new(IMAGE_GROUP, "ImageRepository", &rns, &rname);
            pn.children
                .push(rn.read::<ImageRepository>(&k.client).await?.0);
            root.children.push(pn);
        }
        if args.output == crate::output::TextOrJson::Json {
            outln!("{}", serde_json::to_string_pretty(&root.json())?);
            return Ok(Exit::Ok);
        }
        let mut text = format!("{}\n", root.line());
        let n = root.children.len();
        for (i, child) in root.children.iter().enumerate() {
            // The GitRepository always has policies (or a note) after it.
            let last = i + 1 == n && n > 1;
            text.push_str(&format!(
                "{} {}\n",
                if last { "└──" } else { "├──" },
                child.line()
            ));
            for grandchild in &child.children {
                let prefix = if last {
                    "    └──"
                } else {
                    "│   └──"
                };
                text.push_str(&format!("{prefix} {}\n", grandchild.line()));
            }
        }
        if n == 1 {
            text.push_str(&format!("└── (no ImagePolicy of {ns} is selected)\n"));
        }
        out!("{text}");
        Ok(Exit::Ok)
    })
}
