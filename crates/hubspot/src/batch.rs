//! Batches of at most 100 inputs, write trace ids, and the mapping of a 207's per-input
//! errors back to the inputs.

use super::error::{ApiErrorDetails, HubSpotError, classify};
use super::models::Contact;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};

/// HubSpot's limit on inputs per batch request.
pub const MAX_BATCH: usize = 100;

/// At most [`MAX_BATCH`] inputs, by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T>(Vec<T>);

/// A batch was built from more than [`MAX_BATCH`] inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a HubSpot batch takes at most {MAX_BATCH} inputs, got {0}")]
pub struct BatchTooLarge(pub usize);

impl<T> Batch<T> {
    /// A batch of `items`, refused when there are more than 100.
    pub fn new(items: Vec<T>) -> Result<Self, BatchTooLarge> {
        if items.len() > MAX_BATCH {
            return Err(BatchTooLarge(items.len()));
        }
        Ok(Self(items))
    }

    /// Splits `items` into batches of at most 100, in order.
    pub fn chunked(items: Vec<T>) -> Vec<Batch<T>> {
        let mut batches = Vec::with_capacity(items.len().div_ceil(MAX_BATCH));
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            batches.push(Batch(items.by_ref().take(MAX_BATCH).collect()));
        }
        batches
    }

    /// The inputs.
    pub fn items(&self) -> &[T] {
        &self.0
    }

    /// How many inputs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The inputs, by value.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T> TryFrom<Vec<T>> for Batch<T> {
    type Error = BatchTooLarge;
    fn try_from(items: Vec<T>) -> Result<Self, Self::Error> {
        Self::new(items)
    }
}

/// A record of a batch answer and the input it answers, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedResult<R> {
    /// Position of the input in the batch (from the echoed `objectWriteTraceId`).
    pub input_index: Option<usize>,
    /// The record.
    pub record: R,
}

/// A per-input error of a 207 answer.
#[derive(Debug, Clone)]
pub struct BatchItemError {
    /// Positions of the inputs it concerns (one, usually; none when HubSpot did not say).
    pub input_indices: Vec<usize>,
    /// The error, classified like a whole-request error (validation, conflict, not found...).
    pub error: HubSpotError,
}

/// The answer to a batch write: the records written and the inputs refused.
#[derive(Debug, Clone)]
pub struct BatchOutcome<R> {
    /// Records written.
    pub results: Vec<IndexedResult<R>>,
    /// Inputs refused (empty unless HubSpot answered 207).
    pub errors: Vec<BatchItemError>,
}

impl<R> BatchOutcome<R> {
    /// Positions of all refused inputs.
    pub fn failed_indices(&self) -> BTreeSet<usize> {
        self.errors
            .iter()
            .flat_map(|e| e.input_indices.iter().copied())
            .collect()
    }

    /// The error of the input at `index`, if it was refused.
    pub fn error_for(&self, index: usize) -> Option<&HubSpotError> {
        self.errors
            .iter()
            .find(|e| e.input_indices.contains(&index))
            .map(|e| &e.error)
    }

    /// The record written for the input at `index`, when HubSpot echoed its trace id.
    pub fn result_for(&self, index: usize) -> Option<&R> {
        self.results
            .iter()
            .find(|r| r.input_index == Some(index))
            .map(|r| &r.record)
    }
}

/// The answer to a batch read (of contacts unless said otherwise).
#[derive(Debug, Clone)]
pub struct BatchReadOutcome<R = Contact> {
    /// Records found.
    pub results: Vec<R>,
    /// Ids (or `idProperty` values) HubSpot reports as not found.
    pub missing: Vec<String>,
    /// Any other per-input errors.
    pub errors: Vec<BatchItemError>,
}

/// Trace ids `<ulid>-<index>`: unique per input and per request, so that HubSpot answers a
/// partly invalid batch with a 207 and names the failed inputs.
#[derive(Debug, Clone)]
pub(crate) struct TraceIds {
    prefix: String,
    len: usize,
}

impl TraceIds {
    pub(crate) fn new(len: usize) -> Self {
        Self {
            prefix: ulid::Ulid::generate().to_string(),
            len,
        }
    }

    pub(crate) fn id(&self, index: usize) -> String {
        format!("{}-{index}", self.prefix)
    }

    /// The input index a trace id names; `None` for ids of other requests or out of range.
    pub(crate) fn index_of(&self, trace_id: &str) -> Option<usize> {
        let index: usize = trace_id
            .strip_prefix(&self.prefix)?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        (index < self.len).then_some(index)
    }
}

/// A batch answer (200/201/207) as HubSpot sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawBatchResponse<R> {
    pub results: Vec<R>,
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
}

/// Ties results and errors back to the inputs: by `objectWriteTraceId`, else by the ids
/// HubSpot lists in the error's context (`input_ids[i]` is the id input `i` was sent with).
pub(crate) fn map_outcome<R>(
    raw: RawBatchResponse<R>,
    traces: &TraceIds,
    input_ids: &[String],
    trace_of: impl Fn(&R) -> Option<&str>,
) -> BatchOutcome<R> {
    let results = raw
        .results
        .into_iter()
        .map(|record| IndexedResult {
            input_index: trace_of(&record).and_then(|t| traces.index_of(t)),
            record,
        })
        .collect();
    let by_id: HashMap<&str, usize> = input_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let errors = raw
        .errors
        .iter()
        .map(|value| {
            let details = ApiErrorDetails::from_json(value);
            let mut indices: Vec<usize> = details
                .context_values("objectWriteTraceId")
                .iter()
                .filter_map(|t| traces.index_of(t))
                .collect();
            if indices.is_empty() {
                let ids = details
                    .context_values("ids")
                    .into_iter()
                    .chain(details.context_values("id"));
                indices = ids
                    .filter_map(|id| by_id.get(id.as_str()).copied())
                    .collect();
            }
            indices.sort_unstable();
            indices.dedup();
            BatchItemError {
                input_indices: indices,
                error: classify(details),
            }
        })
        .collect();
    BatchOutcome { results, errors }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::HsObjectId;

    #[test]
    fn a_batch_refuses_more_than_100_inputs_and_chunking_keeps_order() {
        assert!(Batch::new((0..100).collect::<Vec<_>>()).is_ok());
        assert_eq!(
            Batch::new((0..101).collect::<Vec<_>>()),
            Err(BatchTooLarge(101))
        );
        let chunks = Batch::chunked((0..250).collect::<Vec<_>>());
        assert_eq!(
            chunks.iter().map(Batch::len).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        assert_eq!(chunks[2].items()[0], 200);
        assert!(Batch::<u8>::chunked(Vec::new()).is_empty());
    }

    #[test]
    fn trace_ids_are_unique_and_map_back_only_within_their_request() {
        let a = TraceIds::new(3);
        let b = TraceIds::new(3);
        assert_ne!(a.id(0), b.id(0));
        assert_eq!(a.index_of(&a.id(2)), Some(2));
        assert_eq!(a.index_of(&b.id(2)), None);
        assert_eq!(a.index_of(&format!("{}-3", a.prefix)), None);
        assert_eq!(a.index_of("garbage"), None);
    }

    #[test]
    fn a_207_maps_each_error_to_its_input() {
        let traces = TraceIds::new(3);
        let body = serde_json::json!({
            "status": "COMPLETE",
            "numErrors": 1,
            "results": [
                {"id": "11", "properties": {"email": "a@x.io"}, "objectWriteTraceId": traces.id(0)},
                {"id": "12", "properties": {"email": "c@x.io"}, "objectWriteTraceId": traces.id(2)}
            ],
            "errors": [{
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": "Property values were not valid: [{\"isValid\":false,\"message\":\"Email address bad@ is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]",
                "context": {"objectWriteTraceId": [traces.id(1)]}
            }],
            "startedAt": "2026-11-28T10:00:00Z",
            "completedAt": "2026-11-28T10:00:01Z"
        });
        let raw: RawBatchResponse<Contact> = serde_json::from_value(body).expect("valid 207");
        let outcome = map_outcome(raw, &traces, &[], |c| c.object_write_trace_id.as_deref());
        assert_eq!(
            outcome.failed_indices().into_iter().collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(
            outcome.result_for(2).map(|c| &c.id),
            Some(&HsObjectId::from("12"))
        );
        let Some(HubSpotError::Validation { invalid, .. }) = outcome.error_for(1) else {
            panic!("input 1 should have a validation error");
        };
        assert_eq!(invalid[0].name, "email");
    }

    #[test]
    fn an_error_without_trace_id_maps_by_the_ids_in_its_context() {
        let traces = TraceIds::new(2);
        let body = serde_json::json!({
            "results": [{"id": "1", "properties": {}}],
            "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some CONTACT objects", "context": {"ids": ["999"]}}]
        });
        let raw: RawBatchResponse<Contact> = serde_json::from_value(body).expect("valid 207");
        let outcome = map_outcome(raw, &traces, &["1".to_owned(), "999".to_owned()], |_| None);
        assert_eq!(
            outcome.failed_indices().into_iter().collect::<Vec<_>>(),
            vec![1]
        );
        assert!(
            matches!(outcome.error_for(1), Some(HubSpotError::NotFound { ids, .. }) if ids == &["999".to_owned()])
        );
        assert_eq!(outcome.results[0].input_index, None);
    }
}
