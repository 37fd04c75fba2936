//! The engine's container events of one instance: starts, exits and OOM kills, as they happen.

use std::collections::HashMap;

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::{Stream, StreamExt};

use crate::client::DockerClient;
use crate::error::{Error, Result};
use crate::instance::{INSTANCE_LABEL, Instance, PLUGIN_LABEL, REVISION_LABEL, ROLE_LABEL};

/// One thing that happened to a container of the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    /// Full container id.
    pub id: String,
    /// What happened.
    pub action: EventAction,
    /// [`ROLE_LABEL`] of the container.
    pub role: Option<String>,
    /// [`PLUGIN_LABEL`] of the container.
    pub plugin: Option<String>,
    /// [`REVISION_LABEL`] of the container, when it is a number.
    pub revision: Option<u64>,
    /// When, in nanoseconds since the Unix epoch.
    pub time_nanos: i64,
}

/// The container events a supervisor acts on; the rest are passed on by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventAction {
    /// The container started.
    Start,
    /// The container's main process exited (after a crash, a kill or a stop).
    Die {
        /// Its exit status, when the engine reported one.
        exit_code: Option<i64>,
    },
    /// The kernel killed a process of the container for exceeding the memory limit; a
    /// [`EventAction::Die`] follows when it was the main process.
    Oom,
    /// Any other action (`create`, `kill`, `stop`, `destroy`, `exec_start: …`, …).
    Other(String),
}

impl ContainerEvent {
    /// Reads a container event of the engine; `None` when it names no container.
    pub fn from_message(message: EventMessage) -> Option<Self> {
        let actor = message.actor?;
        let id = actor.id.filter(|id| !id.is_empty())?;
        let attributes = actor.attributes.unwrap_or_default();
        let action = match message.action.as_deref().unwrap_or_default() {
            "start" => EventAction::Start,
            "die" => EventAction::Die {
                exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
            },
            "oom" => EventAction::Oom,
            other => EventAction::Other(other.to_owned()),
        };
        let time_nanos = message
            .time_nano
            .or_else(|| message.time.map(|s| s.saturating_mul(1_000_000_000)))
            .unwrap_or_default();
        Some(Self {
            id,
            action,
            role: attributes.get(ROLE_LABEL).cloned(),
            plugin: attributes.get(PLUGIN_LABEL).cloned(),
            revision: attributes.get(REVISION_LABEL).and_then(|r| r.parse().ok()),
            time_nanos,
        })
    }
}

impl DockerClient {
    /// The engine's container events for `instance`, from now on, until the stream is
    /// dropped. Nothing is received unless the caller polls the stream; an error item means
    /// the connection to the engine broke, and a new stream has to be opened.
    pub fn events(
        &self,
        instance: &Instance,
    ) -> impl Stream<Item = Result<ContainerEvent>> + Send + 'static + use<> {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![format!("{INSTANCE_LABEL}={}", instance.id())],
            ),
        ]);
        let what = format!("the event stream of instance {}", instance.id());
        self.docker
            .events(Some(
                EventsOptionsBuilder::default().filters(&filters).build(),
            ))
            .filter_map(move |item| {
                let out = match item {
                    Ok(message) => ContainerEvent::from_message(message).map(Ok),
                    Err(e) => Some(Err(Error::from_engine("watch container events", &what, e))),
                };
                std::future::ready(out)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn message(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("c0ffee".into()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
            }),
            time: Some(1_700_000_000),
            time_nano: Some(1_700_000_000_123_456_789),
            ..Default::default()
        }
    }

    #[test]
    fn die_carries_the_exit_code_and_the_labels() {
        let e = ContainerEvent::from_message(message(
            "die",
            &[
                ("exitCode", "137"),
                (ROLE_LABEL, "plugin"),
                (PLUGIN_LABEL, "calc"),
                (REVISION_LABEL, "4"),
            ],
        ))
        .unwrap();
        assert_eq!(
            e,
            ContainerEvent {
                id: "c0ffee".into(),
                action: EventAction::Die {
                    exit_code: Some(137)
                },
                role: Some("plugin".into()),
                plugin: Some("calc".into()),
                revision: Some(4),
                time_nanos: 1_700_000_000_123_456_789,
            }
        );
    }

    #[test]
    fn start_oom_and_others_are_told_apart() {
        let action = |a: &str| {
            ContainerEvent::from_message(message(a, &[]))
                .unwrap()
                .action
        };
        assert_eq!(action("start"), EventAction::Start);
        assert_eq!(action("oom"), EventAction::Oom);
        assert_eq!(action("destroy"), EventAction::Other("destroy".into()));
        assert_eq!(
            action("die"),
            EventAction::Die { exit_code: None },
            "a die without exitCode"
        );
    }

    #[test]
    fn seconds_stand_in_when_the_engine_gives_no_nanoseconds() {
        let mut m = message("start", &[]);
        m.time_nano = None;
        assert_eq!(
            ContainerEvent::from_message(m).unwrap().time_nanos,
            1_700_000_000_000_000_000
        );
    }
}
