//! Host tasks, and following one to its end with a progress bar fed by its event stream.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::Ctx;
use crate::args::TasksCmd;
use crate::client::Api;
use crate::error::{Error, Result, exit};
use crate::output::{self, Column};

const TASK_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("HOST", "host_id|8"),
    ("KIND", "kind"),
    ("STATUS", "status"),
    ("%", "progress"),
    ("STAGE", "stage"),
    ("UPDATED", "updated_at"),
];

/// How often a stream that ended before its task did is opened again.
const REOPENS: u32 = 20;

pub fn tasks(ctx: &Ctx, cmd: TasksCmd) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        TasksCmd::List {
            host,
            status,
            kind,
            page,
        } => {
            let host = host.map(|h| super::host_id(api, &h)).transpose()?;
            let q = super::query(page, &[("host_id", &host), ("status", &status), ("kind", &kind)]);
            ctx.out.page(&api.get("/v1/admin/tasks", &q)?, TASK_COLUMNS)
        }
        TasksCmd::Show { task_id } => ctx
            .out
            .object(&api.get(&api.scoped(&format!("/tasks/{task_id}"))?, &[])?),
        TasksCmd::Cancel { task_id } => ctx
            .out
            .object(&api.post(&format!("/v1/admin/tasks/{task_id}/cancel"), None)?),
        TasksCmd::Watch { task_id } => {
            let task = api.get(&api.scoped(&format!("/tasks/{task_id}"))?, &[])?;
            let done = follow(api, &task)?;
            ctx.out.object(&done)?;
            succeeded(&done)
        }
    }
}

pub fn is_finished(task: &Value) -> bool {
    matches!(
        task["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// `Ok` for a task that succeeded; its error for one that failed or was cancelled.
pub fn succeeded(task: &Value) -> Result<()> {
    match task["status"].as_str() {
        Some("succeeded") => Ok(()),
        status => {
            let kind = task["kind"].as_str().unwrap_or("task");
            let why = task["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            Err(Error::new(
                exit::TASK_FAILED,
                "task_failed",
                format!("the {kind} task {}{why}", status.unwrap_or("ended")),
            ))
        }
    }
}

/// Shows the task's progress until it ends, and returns it as it ended. On a terminal that is a
/// progress bar; elsewhere (a log, a pipe) a line each time the percentage or stage changes.
pub fn follow(api: &Api, task: &Value) -> Result<Value> {
    let id = task["id"].as_str().unwrap_or_default().to_owned();
    let kind = task["kind"].as_str().unwrap_or("task").to_owned();
    let mut view = View::new(&kind);
    let mut last = task.clone();
    view.show(&last);
    let mut reopened = 0;
    while !is_finished(&last) {
        match api.task_events(&id) {
            Ok(events) => {
                for event in events {
                    last = event?;
                    view.show(&last);
                    if is_finished(&last) {
                        break;
                    }
                }
            }
            // A replica restarting, a proxy's timeout: read the task and try again.
            Err(e) if e.exit == exit::UNAVAILABLE && reopened < REOPENS => {}
            Err(e) => {
                view.abandon();
                return Err(e);
            }
        }
        if !is_finished(&last) {
            if reopened >= REOPENS {
                view.abandon();
                return Err(Error::new(
                    exit::UNAVAILABLE,
                    "stream",
                    format!(
                        "lost the progress of task {id}: follow it with `cloud-cli-proxy tasks watch {id}`"
                    ),
                ));
            }
            reopened += 1;
            std::thread::sleep(Duration::from_secs(1));
            last = api.get(&api.scoped(&format!("/tasks/{id}"))?, &[])?;
            view.show(&last);
        }
    }
    view.finish(&last);
    Ok(last)
}

/// The bar on a terminal, else plain lines on standard error.
struct View {
    bar: Option<ProgressBar>,
    kind: String,
    printed: Option<(i64, String)>,
}

impl View {
    fn new(kind: &str) -> Self {
        // indicatif hides its bar on a terminal that cannot redraw (TERM unset or `dumb`); such
        // a terminal gets the plain lines too.
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos:>3}% {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(kind.to_owned());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let bar = bar.filter(|b| !b.is_hidden());
        Self {
            bar,
            kind: kind.to_owned(),
            printed: None,
        }
    }

    fn show(&mut self, task: &Value) {
        let progress = task["progress"].as_i64().unwrap_or(0).clamp(0, 100);
        let stage = match (task["stage"].as_str(), task["status"].as_str()) {
            (Some(stage), _) if !stage.is_empty() => stage.to_owned(),
            (_, Some(status)) => status.to_owned(),
            _ => String::new(),
        };
        if let Some(bar) = &self.bar {
            bar.set_position(u64::try_from(progress).unwrap_or(0));
            bar.set_message(stage);
            return;
        }
        let now = (progress, stage);
        if self.printed.as_ref() != Some(&now) {
            output::note(&format!("{} [{:>3}%] {}", self.kind, now.0, now.1));
            self.printed = Some(now);
        }
    }

    fn finish(&mut self, task: &Value) {
        let status = task["status"].as_str().unwrap_or("ended");
        match &self.bar {
            Some(bar) if status == "succeeded" => bar.finish_with_message("done"),
            Some(bar) => bar.abandon_with_message(status.to_owned()),
            None => output::note(&format!("{} {status}", self.kind)),
        }
    }

    fn abandon(&mut self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
