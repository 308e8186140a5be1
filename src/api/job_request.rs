//! The body of `POST /api/jobs` (INTERFACE §4.2, §4.3): one schema per direction, told apart
//! by `direction`, so that the OpenAPI document lists exactly the requests the server takes.
//!
//! The body is checked by hand ([`FromJsonBody`]) rather than by poem-openapi's parser, whose
//! errors do not name the field: every refusal here is a 422 naming the field(s) and what they
//! accept. Unknown fields are refused, never ignored: a client written for a newer server
//! (say, one that sends a field this one does not know) must never start a job it did not
//! mean. For the same reason an object or a dry run this version cannot run is refused, never
//! run as something else.

use poem_openapi::registry::{MetaDiscriminatorObject, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde_json::{Map, Value};
use std::borrow::Cow;

use super::job_views::SyncObjectView;
use super::json_body::FromJsonBody;
use super::params::inline_type;
use crate::jobs::model::{
    Direction, JobAction, JobSpec, PullMode, PushMode, SpecError, SyncObject, Trigger,
};
use crate::jobs::queue::EnqueueRequest;

/// Every field the body may have, in the order messages list them.
pub const FIELDS: [&str; 6] = [
    "direction",
    "object",
    "mode",
    "incremental",
    "force",
    "dry_run",
];

/// How a push treats contacts that already exist in HubSpot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "PushMode", rename_all = "lowercase")]
pub enum PushModeView {
    /// Link to the existing HubSpot contact, leave its properties alone (the default).
    Link,
    /// Overwrite HubSpot's properties with the local values.
    Upsert,
}

/// How a pull writes HubSpot contacts locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "PullMode", rename_all = "lowercase")]
pub enum PullModeView {
    /// One upsert per page (the default).
    Upsert,
    /// Contact by contact, explaining every decision.
    Verbose,
}

/// A flag this version accepts only as `false` (documented as `enum: [false]`, and `null`, which
/// the body's fields all take for "absent"): the feature it names is not built yet, and asking
/// for it is refused rather than ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlyFalse;

inline_type!(OnlyFalse, "only_false", || {
    let mut schema = MetaSchema::new("boolean");
    // OpenAPI 3.0 checks `enum` after `nullable`, so the null the field accepts is listed.
    schema.enum_items = vec![Value::Bool(false), Value::Null];
    schema
});

impl ParseFromJSON for OnlyFalse {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::Bool(false)) => Ok(Self),
            _ => Err(ParseError::custom("only `false` is accepted")),
        }
    }
}

impl ToJSON for OnlyFalse {
    fn to_json(&self) -> Option<Value> {
        Some(Value::Bool(false))
    }
}

/// A push request.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "PushJobRequest")]
pub struct PushJobRequest {
    /// What to sync: `contacts` (the default) or `companies`.
    #[oai(nullable)]
    pub object: Option<SyncObjectView>,
    /// `link` (default) or `upsert`.
    #[oai(nullable)]
    pub mode: Option<PushModeView>,
    /// Only `false`: a push always considers only new and changed contacts.
    #[oai(nullable)]
    pub incremental: Option<OnlyFalse>,
    /// Enqueue even while a push of the same object (a dry run: another dry run) is queued,
    /// running or retrying (default false).
    #[oai(nullable)]
    pub force: Option<bool>,
    /// Only report what the push would do: it reads, and writes nothing to HubSpot or to the
    /// local tables but the job row (default false). Refused (422), never run for real, where
    /// the object's sync cannot run one.
    #[oai(nullable)]
    pub dry_run: Option<bool>,
}

/// A pull request.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "PullJobRequest")]
pub struct PullJobRequest {
    /// What to sync: `contacts` (the default) or `companies`.
    #[oai(nullable)]
    pub object: Option<SyncObjectView>,
    /// `upsert` (default) or `verbose` (the same writes; `upserted` stays 0 and the breakdown is
    /// in `created` and `linked`).
    #[oai(nullable)]
    pub mode: Option<PullModeView>,
    /// Read only what changed since the last successful pull (default false).
    #[oai(nullable)]
    pub incremental: Option<bool>,
    /// Enqueue even while a pull of the same object (a dry run: another dry run) is queued,
    /// running or retrying (default false).
    #[oai(nullable)]
    pub force: Option<bool>,
    /// Only report what the pull would do: it reads, and writes nothing to the local tables
    /// but the job row (default false). Refused (422), never run for real, where the object's
    /// sync cannot run one.
    #[oai(nullable)]
    pub dry_run: Option<bool>,
}

/// The body of `POST /api/jobs`: `direction` (required) picks the schema. Fields not listed
/// are refused with 422 naming them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRequestBody {
    /// Local contacts → HubSpot.
    Push(PushJobRequest),
    /// HubSpot contacts → local database.
    Pull(PullJobRequest),
}

/// The schema names of the two variants, with their `direction`.
const VARIANTS: [(&str, &str); 2] = [("push", "PushJobRequest"), ("pull", "PullJobRequest")];

/// A schema no value satisfies: OpenAPI 3.0's `additionalProperties: false`, which poem-openapi's
/// registry cannot write as a literal `false`.
fn nothing() -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        description: Some("no other field is accepted"),
        all_of: vec![
            MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
            MetaSchemaRef::Inline(Box::new(MetaSchema::new("integer"))),
        ],
        ..MetaSchema::ANY
    }))
}

/// Documented by hand rather than by poem-openapi's `Union`: that one adds `direction` beside
/// each variant (`allOf`), where a closed object (no other fields) would then refuse it.
impl Type for JobRequestBody {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "JobRequest".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        PushJobRequest::register(registry);
        PullJobRequest::register(registry);
        for (direction, name) in VARIANTS {
            if let Some(schema) = registry.schemas.get_mut(name)
                && !schema.required.contains(&"direction")
            {
                let mut property = MetaSchema::new("string");
                property.enum_items = vec![Value::from(direction)];
                property.description = Some("Which way records flow.");
                schema
                    .properties
                    .insert(0, ("direction", MetaSchemaRef::Inline(Box::new(property))));
                schema.required.insert(0, "direction");
                schema.additional_properties = Some(Box::new(nothing()));
            }
        }
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| MetaSchema {
            description: Some(
                "A push or a pull, told apart by `direction` (required). Any field not listed \
                 is refused with 422 naming it.",
            ),
            one_of: VARIANTS
                .iter()
                .map(|(_, name)| MetaSchemaRef::Reference((*name).to_owned()))
                .collect(),
            discriminator: Some(MetaDiscriminatorObject {
                property_name: "direction",
                mapping: VARIANTS
                    .iter()
                    .map(|(direction, name)| {
                        (
                            (*direction).to_owned(),
                            format!("#/components/schemas/{name}"),
                        )
                    })
                    .collect(),
            }),
            ..MetaSchema::ANY
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl JobRequestBody {
    /// The enqueue request this body asks for (every check was made while parsing).
    pub fn to_request(&self, trigger: Trigger) -> EnqueueRequest {
        let (action, object, dry_run, force) = match self {
            Self::Push(push) => (
                JobAction::Push {
                    mode: match push.mode {
                        None | Some(PushModeView::Link) => PushMode::Link,
                        Some(PushModeView::Upsert) => PushMode::Upsert,
                    },
                },
                push.object,
                push.dry_run,
                push.force,
            ),
            Self::Pull(pull) => (
                JobAction::Pull {
                    mode: match pull.mode {
                        None | Some(PullModeView::Upsert) => PullMode::Upsert,
                        Some(PullModeView::Verbose) => PullMode::Verbose,
                    },
                    incremental: pull.incremental.unwrap_or(false),
                },
                pull.object,
                pull.dry_run,
                pull.force,
            ),
        };
        EnqueueRequest {
            spec: JobSpec {
                object: object.map_or(SyncObject::Contacts, SyncObject::from),
                action,
                dry_run: dry_run.unwrap_or(false),
            },
            trigger,
            force: force.unwrap_or(false),
        }
    }
}

impl FromJsonBody for JobRequestBody {
    fn from_json_body(value: Value) -> Result<Self, String> {
        let Value::Object(fields) = value else {
            return Err(format!(
                "the body must be a JSON object such as {{\"direction\": \"push\"}}, not {value}"
            ));
        };
        refuse_unknown(&fields)?;
        let direction = match fields.get("direction") {
            None | Some(Value::Null) => return Err(SpecError::MissingDirection.to_string()),
            Some(Value::String(s)) => s.parse::<Direction>().map_err(|e| e.to_string())?,
            Some(other) => {
                return Err(format!(
                    "\"direction\" must be \"push\" or \"pull\", not {other}"
                ));
            }
        };
        let object = optional(&fields, "object", |v| {
            v.as_str()
                .and_then(|name| name.parse::<SyncObject>().ok())
                .ok_or_else(|| {
                    format!("unknown object {v}: expected \"contacts\" or \"companies\"")
                })
        })?;
        let force = optional(&fields, "force", boolean("force"))?;
        let incremental = optional(&fields, "incremental", boolean("incremental"))?;
        let dry_run = optional(&fields, "dry_run", boolean("dry_run"))?;
        // The same checks as every other way in (CLI, schedules): an object or a dry run this
        // version cannot run is refused here, never run as another job.
        JobSpec::push()
            .for_object(object.unwrap_or_default())
            .and_then(|spec| spec.with_dry_run(dry_run.unwrap_or(false)))
            .map_err(|e| e.to_string())?;
        let object = object.map(SyncObjectView::from);
        let mode = optional(&fields, "mode", |v| {
            v.as_str()
                .ok_or_else(|| format!("\"mode\" must be a string, not {v}"))
        })?;
        let invalid_mode = |expected| SpecError::InvalidMode {
            direction,
            mode: mode.unwrap_or_default().to_owned(),
            expected,
        };
        Ok(match direction {
            Direction::Push => {
                if incremental == Some(true) {
                    return Err(SpecError::IncrementalPush.to_string());
                }
                Self::Push(PushJobRequest {
                    object,
                    mode: match mode {
                        None => None,
                        Some("link") => Some(PushModeView::Link),
                        Some("upsert") => Some(PushModeView::Upsert),
                        Some(_) => return Err(invalid_mode("\"link\" or \"upsert\"").to_string()),
                    },
                    incremental: incremental.map(|_| OnlyFalse),
                    force,
                    dry_run,
                })
            }
            Direction::Pull => Self::Pull(PullJobRequest {
                object,
                mode: match mode {
                    None => None,
                    Some("upsert") => Some(PullModeView::Upsert),
                    Some("verbose") => Some(PullModeView::Verbose),
                    Some(_) => return Err(invalid_mode("\"upsert\" or \"verbose\"").to_string()),
                },
                incremental,
                force,
                dry_run,
            }),
        })
    }
}

/// Refuses every field the body does not define, naming them all.
fn refuse_unknown(fields: &Map<String, Value>) -> Result<(), String> {
    let unknown: Vec<String> = fields
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()))
        .map(|k| format!("{k:?}"))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let (noun, pronoun) = if unknown.len() == 1 {
        ("field", "it")
    } else {
        ("fields", "them")
    };
    Err(format!(
        "unknown {noun} {}: this server does not know {pronoun}, so nothing was enqueued; \
         the fields are {}",
        unknown.join(", "),
        FIELDS.map(|f| format!("{f:?}")).join(", ")
    ))
}

/// The field's value checked by `check`; `None` when absent or `null`.
fn optional<'a, T>(
    fields: &'a Map<String, Value>,
    name: &str,
    check: impl FnOnce(&'a Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => check(value).map(Some),
    }
}

fn boolean(name: &'static str) -> impl Fn(&Value) -> Result<bool, String> {
    move |v| {
        v.as_bool()
            .ok_or_else(|| format!("{name:?} must be true or false, not {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<EnqueueRequest, String> {
        JobRequestBody::from_json_body(body).map(|b| b.to_request(Trigger::Api))
    }

    #[test]
    fn a_body_is_checked_into_a_spec_with_defaults() {
        let req = parse(json!({"direction": "pull", "incremental": true})).unwrap();
        assert_eq!(req.spec.mode_str(), "upsert");
        assert!(req.spec.incremental() && !req.force);
        let req = parse(
            json!({"direction": "push", "object": "contacts", "mode": "upsert",
            "incremental": false, "force": true, "dry_run": false}),
        )
        .unwrap();
        assert_eq!(
            req.spec,
            JobSpec::from(JobAction::Push {
                mode: PushMode::Upsert
            })
        );
        assert!(req.force);
        let nulls = parse(json!({"direction": "push", "mode": null, "force": null})).unwrap();
        assert_eq!(nulls.spec, JobSpec::push());
    }

    #[test]
    fn unknown_fields_are_refused_all_named() {
        let err = parse(json!({"direction": "push", "dryrun": true, "limit": 5})).unwrap_err();
        assert!(err.contains("\"dryrun\", \"limit\""), "{err}");
        assert!(err.contains("nothing was enqueued"), "{err}");
    }

    #[test]
    fn companies_are_carried_in_either_pull_mode() {
        let req = parse(json!({"direction": "pull", "object": "companies"})).unwrap();
        assert_eq!(req.spec.object, SyncObject::Companies);
        let req =
            parse(json!({"direction": "pull", "object": "companies", "mode": "verbose"})).unwrap();
        assert_eq!(req.spec.object, SyncObject::Companies);
        assert!(matches!(
            req.spec.action,
            JobAction::Pull {
                mode: PullMode::Verbose,
                ..
            }
        ));
    }

    #[test]
    fn object_and_dry_run_are_carried_into_the_spec() {
        let req =
            parse(json!({"direction": "pull", "object": "contacts", "dry_run": false})).unwrap();
        assert_eq!(req.spec.object, SyncObject::Contacts);
        assert!(!req.spec.dry_run);
    }

    #[test]
    fn wrong_values_name_the_field_and_the_choices() {
        for (body, needle) in [
            (json!([]), "must be a JSON object"),
            (json!({}), "\"direction\" is required"),
            (json!({"direction": 1}), "\"direction\" must be"),
            (
                json!({"direction": "sideways"}),
                "expected \"push\" or \"pull\"",
            ),
            (
                json!({"direction": "push", "mode": "verbose"}),
                "\"link\" or \"upsert\"",
            ),
            (
                json!({"direction": "pull", "mode": 3}),
                "\"mode\" must be a string",
            ),
            (
                json!({"direction": "push", "incremental": true}),
                "pull only",
            ),
            (
                json!({"direction": "pull", "force": "yes"}),
                "\"force\" must be true or false",
            ),
            (
                json!({"direction": "pull", "object": "deals"}),
                "expected \"contacts\" or \"companies\"",
            ),
            (
                json!({"direction": "push", "dry_run": "yes"}),
                "\"dry_run\" must be true or false",
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn the_documented_schemas_list_exactly_the_accepted_fields() {
        let mut registry = Registry::new();
        JobRequestBody::register(&mut registry);
        for name in ["PushJobRequest", "PullJobRequest"] {
            let schema = &registry.schemas[name];
            let mut documented: Vec<&str> = schema.properties.iter().map(|(n, _)| *n).collect();
            documented.sort_unstable();
            let mut accepted = FIELDS.to_vec();
            accepted.sort_unstable();
            assert_eq!(documented, accepted, "{name}");
        }
    }
}
