//! What an authenticated request asks for: which forge sent it (from its
//! event header), which event, and for a push whether its `ref` is the
//! followed branch. Pure: headers, body and branch in, a verdict out.

use serde::Deserialize;

use super::http::Headers;

/// The event headers, in the order they are looked for: Gitea and Forgejo
/// also send GitHub's header, so theirs are tried first.
const EVENT_HEADERS: &[(&str, Forge)] = &[
    ("x-forgejo-event", Forge::Forgejo),
    ("x-gitea-event", Forge::Gitea),
    ("x-gogs-event", Forge::Gogs),
    ("x-github-event", Forge::GitHub),
    ("x-gitlab-event", Forge::GitLab),
];

/// Longest event name or ref shown in the log.
const MAX_LOGGED_CHARS: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    Forgejo,
    Gogs,
    GitLab,
    /// No event header: a JSON body with `ref`.
    Generic,
}

impl Forge {
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::Forgejo => "forgejo",
            Forge::Gogs => "gogs",
            Forge::GitLab => "gitlab",
            Forge::Generic => "generic",
        }
    }
}

/// What to do with an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A push to the followed branch: ask for a pass (202).
    Trigger { after: Option<String> },
    /// A forge checking the hook (200), nothing else.
    Ping,
    /// Another event, or a push to another ref (204).
    Ignore(String),
    /// A push whose payload is not JSON or has no `ref` (400).
    BadPayload(String),
}

/// The event as the log shows it: forge and event name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub forge: Forge,
    /// The event header's value, or `push` for the generic form.
    pub name: String,
}

/// Which forge and event a request claims, from its headers alone (used for
/// the log line of refused requests too).
pub fn event_of(headers: &Headers) -> Event {
    for (header, forge) in EVENT_HEADERS {
        if let Some(value) = headers.text(header) {
            return Event {
                forge: *forge,
                name: loggable(&value),
            };
        }
    }
    Event {
        forge: Forge::Generic,
        name: "push".into(),
    }
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    reference: Option<String>,
    after: Option<String>,
}

/// The verdict for an authenticated request to a receiver following `branch`.
pub fn decide(event: &Event, body: &[u8], branch: &str) -> (Verdict, Option<String>) {
    let is_push = match event.forge {
        Forge::GitHub | Forge::Gitea | Forge::Forgejo | Forge::Gogs => {
            if event.name.eq_ignore_ascii_case("ping") {
                return (Verdict::Ping, None);
            }
            event.name.eq_ignore_ascii_case("push")
        }
        Forge::GitLab => event.name.eq_ignore_ascii_case("Push Hook"),
        Forge::Generic => true,
    };
    if !is_push {
        return (
            Verdict::Ignore(format!("event {:?} is not a push", event.name)),
            None,
        );
    }
    let push: Push = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return (
                Verdict::BadPayload(format!("payload is not a JSON object: {e}")),
                None,
            )
        }
    };
    let Some(reference) = push.reference else {
        return (Verdict::BadPayload("payload has no \"ref\"".into()), None);
    };
    let shown = loggable(&reference);
    if reference != format!("refs/heads/{branch}") {
        return (
            Verdict::Ignore(format!("ref {shown:?} is not refs/heads/{branch}")),
            Some(shown),
        );
    }
    let after = push
        .after
        .filter(|a| a.len() <= 64 && a.bytes().all(|b| b.is_ascii_hexdigit()));
    (Verdict::Trigger { after }, Some(shown))
}

/// Text from the request made safe for one log line: control characters
/// escaped, length capped.
pub fn loggable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_LOGGED_CHARS)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > MAX_LOGGED_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        )
    }

    fn verdict(pairs: &[(&str, &str)], body: &str) -> Verdict {
        decide(&event_of(&headers(pairs)), body.as_bytes(), "main").0
    }

    const MAIN: &str =
        r#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;
    const OTHER: &str = r#"{"ref":"refs/heads/feature"}"#;

    #[test]
    fn a_push_to_the_branch_triggers_for_every_forge() {
        for pairs in [
            &[("X-GitHub-Event", "push")][..],
            &[("X-Gitea-Event", "push"), ("X-GitHub-Event", "push")],
            &[("X-Forgejo-Event", "push"), ("X-Gitea-Event", "push")],
            &[("X-Gogs-Event", "push")],
            &[("X-Gitlab-Event", "Push Hook")],
            &[],
        ] {
            assert_eq!(
                verdict(pairs, MAIN),
                Verdict::Trigger {
                    after: Some("0123456789abcdef0123456789abcdef01234567".into())
                },
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn forges_are_named_after_their_own_header() {
        let e = event_of(&headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Gitea-Event", "push"),
            ("X-Forgejo-Event", "push"),
        ]));
        assert_eq!(e.forge, Forge::Forgejo);
        assert_eq!(event_of(&headers(&[])).forge, Forge::Generic);
    }

    #[test]
    fn other_branches_tags_and_events_are_ignored_and_ping_answers() {
        assert!(matches!(
            verdict(&[("X-GitHub-Event", "push")], OTHER),
            Verdict::Ignore(_)
        ));
        assert!(matches!(
            verdict(&[], r#"{"ref":"refs/tags/main"}"#),
            Verdict::Ignore(_)
        ));
        assert!(matches!(
            verdict(
                &[("X-GitHub-Event", "push")],
                r#"{"ref":"refs/heads/main2"}"#
            ),
            Verdict::Ignore(_)
        ));
        assert!(matches!(
            verdict(&[("X-GitHub-Event", "issues")], MAIN),
            Verdict::Ignore(_)
        ));
        assert!(matches!(
            verdict(&[("X-Gitlab-Event", "Tag Push Hook")], MAIN),
            Verdict::Ignore(_)
        ));
        assert_eq!(
            verdict(&[("X-GitHub-Event", "ping")], r#"{"zen":"x"}"#),
            Verdict::Ping
        );
    }

    #[test]
    fn bad_payloads_are_reported() {
        assert!(matches!(
            verdict(&[("X-GitHub-Event", "push")], "not json"),
            Verdict::BadPayload(_)
        ));
        assert!(matches!(verdict(&[], "[1,2]"), Verdict::BadPayload(_)));
        assert!(matches!(verdict(&[], "{}"), Verdict::BadPayload(_)));
        assert!(matches!(
            verdict(&[], r#"{"ref":5}"#),
            Verdict::BadPayload(_)
        ));
        // A deep nesting is an error from serde_json, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(verdict(&[], &deep), Verdict::BadPayload(_)));
    }

    #[test]
    fn odd_after_values_are_dropped_and_log_text_is_tamed() {
        assert_eq!(
            verdict(&[], r#"{"ref":"refs/heads/main","after":"x\ny"}"#),
            Verdict::Trigger { after: None }
        );
        assert_eq!(loggable("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(loggable(&"x".repeat(200)).chars().count(), 81);
    }
}
