//! `kubectl reprise`: the plan, its incidents and drills as people read them.
//! Reads only what the API server gives the user running it (their own
//! credentials, their own namespaces); writes only the annotations a person
//! would set by hand (approve, acknowledge, start a drill).

pub mod text;
pub mod view;

use std::{io::IsTerminal, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::{api::authentication::v1::SelfSubjectReview, jiff::Timestamp};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::Serialize;

use crate::api::{
    Database, Incident, RecoveryPlan,
    incident::{ACKNOWLEDGE_ANNOTATION, APPROVE_ANNOTATION, IncidentPhase},
    recovery_plan::DRILL_NOW_ANNOTATION,
};

/// See a recovery plan: its readiness, incidents, drills and reports.
#[derive(Parser, Debug)]
#[command(name = "kubectl-reprise", bin_name = "kubectl reprise", version, about)]
pub struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Every namespace the user may list (status only).
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    /// Kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "text")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Output {
    Text,
    Json,
    Yaml,
    /// A self-contained HTML page (`report` only).
    Html,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Plans, readiness per level, open incidents, last drill, backups' ages against the RPO.
    Status,
    /// One incident: its timeline against the level's window, measures, who was told.
    Incident { name: String },
    /// Start a drill of PLAN now and follow it to its end.
    Drill {
        plan: String,
        /// Start it and return at once.
        #[arg(long)]
        no_follow: bool,
        /// Give up following after this many seconds (default: the plan's drill timeout and a minute).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Approve an incident's step that waits for a person.
    Approve { incident: String },
    /// Acknowledge an incident (its responders are not paged again).
    Ack { incident: String },
    /// An incident's or a plan's last drill's report (`-o html` for the page).
    Report {
        #[arg(value_enum)]
        what: ReportKind,
        name: String,
        /// Write it to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum ReportKind {
    Incident,
    Drill,
}

/// Runs the plugin; the exit code is 1 with a message on any error.
pub async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    crate::install_crypto_provider();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (client, default_ns) = connect(&cli).await?;
    let ns = cli.namespace.clone().unwrap_or(default_ns);
    let out = Out {
        format: cli.output,
        paint: text::Paint {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        },
    };
    match cli.command {
        Command::Status => status(&client, (!cli.all_namespaces).then_some(ns.as_str()), out).await,
        Command::Incident { name } => incident(&client, &ns, &name, out).await,
        Command::Drill {
            plan,
            no_follow,
            timeout,
        } => drill(&client, &ns, &plan, !no_follow, timeout, out).await,
        Command::Approve { incident } => approve(&client, &ns, &incident, out).await,
        Command::Ack { incident } => acknowledge(&client, &ns, &incident, out).await,
        Command::Report { what, name, out: file } => report(&client, &ns, what, &name, out, file).await,
    }
}

/// The client and default namespace from the kubeconfig, as kubectl would pick them.
async fn connect(cli: &Cli) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options).await?
        }
        None => Config::from_kubeconfig(&options).await?,
    };
    let ns = config.default_namespace.clone();
    Ok((Client::try_from(config)?, ns))
}

struct Out {
    format: Output,
    paint: text::Paint,
}

impl Out {
    /// Prints `view` as asked: JSON, YAML, or the text `draw` makes.
    fn print<T: Serialize>(&self, view: &T, draw: impl FnOnce(&T, text::Paint) -> String) -> anyhow::Result<()> {
        match self.format {
            Output::Json => println!("{}", serde_json::to_string_pretty(view)?),
            Output::Yaml => print!("{}", serde_yaml_ng::to_string(view)?),
            Output::Text => print!("{}", draw(view, self.paint)),
            Output::Html => bail!("-o html is for `report`"),
        }
        Ok(())
    }

    /// What approve or ack did: a sentence, or the record as asked.
    fn said(&self, s: &Said) -> anyhow::Result<()> {
        self.print(s, |s, _| format!("Incident {} {} as {}\n", s.incident, s.done, s.by))
    }
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn status(client: &Client, ns: Option<&str>, out: Out) -> anyhow::Result<()> {
    let lp = ListParams::default();
    let plans = api::<RecoveryPlan>(client, ns)
        .list(&lp)
        .await
        .context("listing RecoveryPlans")?;
    let incidents = api::<Incident>(client, ns)
        .list(&lp)
        .await
        .context("listing Incidents")?;
    // Databases give the backups' ages; a user who may not list them still sees the rest.
    let databases = api::<Database>(client, ns)
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let v = view::status(&plans.items, &incidents.items, &databases, Timestamp::now());
    out.print(&v, text::status)
}

async fn incident(client: &Client, ns: &str, name: &str, out: Out) -> anyhow::Result<()> {
    let inc = incident_named(client, ns, name).await?;
    let plan = Api::<RecoveryPlan>::namespaced(client.clone(), ns)
        .get_opt(&inc.spec.plan_ref.name)
        .await?;
    let v = view::incident(&inc, plan.as_ref(), Timestamp::now());
    out.print(&v, text::incident)
}

/// Incident `name` of `ns`, or an error that names it.
async fn incident_named(client: &Client, ns: &str, name: &str) -> anyhow::Result<Incident> {
    Api::<Incident>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("Incident {name} in namespace {ns}"))
}

/// The user's name as the API server knows it (None: it will not say).
async fn whoami(client: &Client) -> Option<String> {
    let review: SelfSubjectReview = Api::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    review.status?.user_info?.username
}

async fn annotate<K>(api: &Api<K>, name: &str, key: &str, value: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating {name}"))?;
    Ok(())
}

async fn approve(client: &Client, ns: &str, name: &str, out: Out) -> anyhow::Result<()> {
    let api = Api::<Incident>::namespaced(client.clone(), ns);
    let inc = incident_named(client, ns, name).await?;
    let phase = inc.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase != IncidentPhase::AwaitingApproval {
        bail!("Incident {name} is {phase:?}: nothing waits for an approval");
    }
    let who = whoami(client).await.unwrap_or_else(|| "true".into());
    annotate(&api, name, APPROVE_ANNOTATION, &who).await?;
    out.said(&Said {
        incident: name,
        by: &who,
        done: "approved",
    })
}

/// What approve and ack did, for `-o json|yaml`.
#[derive(Serialize)]
struct Said<'a> {
    incident: &'a str,
    done: &'a str,
    by: &'a str,
}

async fn acknowledge(client: &Client, ns: &str, name: &str, out: Out) -> anyhow::Result<()> {
    let api = Api::<Incident>::namespaced(client.clone(), ns);
    let inc = incident_named(client, ns, name).await?;
    if let Some(by) = inc.annotations().get(ACKNOWLEDGE_ANNOTATION) {
        return out.said(&Said {
            incident: name,
            by,
            done: "already acknowledged",
        });
    }
    let who = whoami(client).await.unwrap_or_else(|| "kubectl-reprise".into());
    annotate(&api, name, ACKNOWLEDGE_ANNOTATION, &who).await?;
    out.said(&Said {
        incident: name,
        by: &who,
        done: "acknowledged",
    })
}

async fn drill(
    client: &Client,
    ns: &str,
    name: &str,
    follow: bool,
    timeout: Option<u64>,
    out: Out,
) -> anyhow::Result<()> {
    let api = Api::<RecoveryPlan>::namespaced(client.clone(), ns);
    let plan = api
        .get(name)
        .await
        .with_context(|| format!("RecoveryPlan {name} in namespace {ns}"))?;
    let Some(drills) = &plan.spec.drills else {
        bail!("RecoveryPlan {name} has no spec.drills: it names what a drill restores and how long it may take");
    };
    let trigger = format!("kubectl-reprise-{}", Timestamp::now().as_millisecond());
    annotate(&api, name, DRILL_NOW_ANNOTATION, &trigger).await?;
    eprintln!("drill of {name} asked ({DRILL_NOW_ANNOTATION}={trigger})");
    if !follow {
        return Ok(());
    }
    let limit = Duration::from_secs(timeout.unwrap_or(drills.timeout.as_std().as_secs() + 60));
    let started = std::time::Instant::now();
    let mut said = String::new();
    loop {
        let plan = api.get(name).await?;
        let last = plan.status.as_ref().and_then(|s| s.last_drill.clone());
        if let Some(d) = last.filter(|d| d.trigger == trigger) {
            if d.finished.is_some() {
                out.print(&d, text::drill)?;
                if !d.verified() {
                    bail!("the drill did not meet the window of every level it drilled");
                }
                return Ok(());
            }
            let now = format!("{} running: {} components", d.id, d.components.len());
            if now != said {
                eprintln!("{now}");
                said = now;
            }
        }
        if started.elapsed() > limit {
            bail!("the drill had not finished after {}s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn report(
    client: &Client,
    ns: &str,
    what: ReportKind,
    name: &str,
    out: Out,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let plans = Api::<RecoveryPlan>::namespaced(client.clone(), ns);
    let (kind, resource) = match what {
        ReportKind::Incident => ("Incident", "incidents"),
        ReportKind::Drill => ("RecoveryPlan", "recoveryplans"),
    };
    if out.format != Output::Html {
        return match what {
            ReportKind::Incident => {
                let inc = incident_named(client, ns, name).await?;
                let plan = plans.get_opt(&inc.spec.plan_ref.name).await?;
                out.print(&view::incident(&inc, plan.as_ref(), Timestamp::now()), text::incident)
            }
            ReportKind::Drill => {
                let plan = plans
                    .get(name)
                    .await
                    .with_context(|| format!("{kind} {name} in namespace {ns}"))?;
                let Some(d) = plan.status.and_then(|s| s.last_drill) else {
                    bail!("RecoveryPlan {name} has not run a drill yet");
                };
                out.print(&d, text::drill)
            }
        };
    }
    // The same page the operator serves.
    let html = crate::report::render(client, ns, resource, name)
        .await
        .with_context(|| format!("{kind} {name} in namespace {ns}"))?
        .with_context(|| format!("no {kind} {name} in namespace {ns}"))?;
    match file {
        Some(path) => {
            std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ({})", path.display(), name);
        }
        None => print!("{html}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_go_before_or_after_the_command() {
        let cli = Cli::try_parse_from(["kubectl-reprise", "-n", "shop", "incident", "x", "-o", "json"]).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.output, Output::Json);
    }
}
