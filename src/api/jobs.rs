//! Job routes (INTERFACE §4.2): `POST /api/jobs`, `GET /api/jobs/{id}`, `GET /api/jobs`,
//! `POST /api/jobs/{id}/cancel`, `GET /api/schedules`, and the original app's
//! `GET /sync-contacts` (push) and `GET /initial-contacts-sync` (pull). All take the token.
//!
//! Enqueueing answers 202 with the job and `Location: /api/jobs/{id}`; while a job of the
//! same slot (object, direction, dry run) is queued, running or retrying, it answers 202 with
//! that job instead, unless the request says `"force": true`.

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::AppState;
use super::auth::ApiToken;
use super::error::{
    ApiError, ErrorBody, ErrorCode, ErrorDetail, Failure, JsonInput, NoInput, ParamInput,
};
use super::job_request::JobRequestBody;
use super::job_views::{
    DEFAULT_LIST_LIMIT, JobListView, JobView, MAX_LIST_LIMIT, ScheduleItemView, ScheduleListView,
    StatusParam,
};
use super::json_body::JsonBody;
use super::params::PageSize;
use super::tags::ApiTags;
use crate::ids::JobId;
use crate::jobs::model::{Job, JobSpec, Trigger};
use crate::jobs::queue::{EnqueueRequest, QueueError, enqueue};
use crate::jobs::schedule;

/// The `limit` parameter of `GET /api/jobs`.
type Limit = PageSize<DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT>;

/// The answer to a request that enqueues a job.
#[derive(ApiResponse)]
pub enum Accepted {
    /// The job enqueued — or, while a job of the same object, direction and dry run is
    /// queued, running or retrying, that job (send `"force": true` to enqueue another anyway).
    #[oai(status = 202)]
    Job(
        Json<JobView>,
        /// Where to poll the job.
        #[oai(header = "Location")]
        String,
    ),
}

impl Accepted {
    fn of(job: &Job) -> Self {
        Self::Job(Json(JobView::from(job)), format!("/api/jobs/{}", job.id))
    }
}

/// The answer to `GET /api/jobs/{id}`.
#[derive(ApiResponse)]
pub enum JobAnswer {
    /// The job.
    #[oai(status = 200)]
    Found(Json<Box<JobView>>),
    /// No job has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}

/// The answer to `POST /api/jobs/{id}/cancel`.
#[derive(ApiResponse)]
pub enum CancelAnswer {
    /// The job is cancelled; a running one stops at its next page.
    #[oai(status = 200)]
    Cancelled(Json<Box<JobView>>),
    /// No job has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The job had already finished (code `conflict`); the body's message says how.
    #[oai(status = 409)]
    Finished(Json<ErrorBody>),
}

fn error_body(code: ErrorCode, message: String) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: ErrorDetail { code, message },
    })
}

fn no_such_job(raw: &str) -> Json<ErrorBody> {
    error_body(ErrorCode::NotFound, format!("no job with id {raw:?}"))
}

/// Routes that start and read sync jobs; every operation takes [`ApiToken`] first.
pub struct JobsApi {
    pub(super) state: AppState,
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Enqueue a push or pull job.
    ///
    /// Body: `direction` (`push` or `pull`, required), `object` (`contacts` default, or
    /// `companies`), `mode` (push: `link` default or `upsert`; pull: `upsert` default or
    /// `verbose`), `incremental` (pull only), `force`, `dry_run` (default false). Any other
    /// field, a value that is not one of its choices, or an object or dry run this version
    /// cannot run is a 422 naming the field, and nothing is enqueued.
    #[oai(path = "/api/jobs", method = "post", operation_id = "createJob")]
    async fn create_job(
        &self,
        _auth: ApiToken,
        body: JsonBody<JobRequestBody>,
    ) -> Result<Accepted, Failure<JsonInput>> {
        self.enqueue(body.0.to_request(Trigger::Api)).await
    }

    /// One job: status, counts, errors and progress.
    #[oai(path = "/api/jobs/:id", method = "get", operation_id = "getJob")]
    async fn get_job(
        &self,
        _auth: ApiToken,
        id: Path<String>,
    ) -> Result<JobAnswer, Failure<NoInput>> {
        let Ok(job_id) = id.0.trim().parse::<JobId>() else {
            return Ok(JobAnswer::NotFound(no_such_job(&id.0)));
        };
        let job = self
            .state
            .store
            .get_job(job_id)
            .await
            .map_err(|e| ApiError::from_store("reading a job failed", &e))?;
        Ok(match job {
            Some(job) => JobAnswer::Found(Json(Box::new(JobView::from(&job)))),
            None => JobAnswer::NotFound(no_such_job(&id.0)),
        })
    }

    /// Recent jobs, newest first.
    #[oai(path = "/api/jobs", method = "get", operation_id = "listJobs")]
    async fn list_jobs(
        &self,
        _auth: ApiToken,
        /// Only jobs with this status (absent or empty: every status).
        status: Query<Option<StatusParam>>,
        /// How many, 1 to 500 (default 20).
        limit: Query<Option<Limit>>,
    ) -> Result<Json<JobListView>, Failure<ParamInput>> {
        let status = status.0.and_then(|s| s.0);
        let jobs = self
            .state
            .store
            .list_jobs(status, Limit::or_default(limit.0))
            .await
            .map_err(|e| ApiError::from_store("listing jobs failed", &e))?;
        Ok(Json(JobListView {
            results: jobs.iter().map(JobView::from).collect(),
        }))
    }

    /// Cancel a queued, running or retrying job; its counts so far are kept.
    #[oai(
        path = "/api/jobs/:id/cancel",
        method = "post",
        operation_id = "cancelJob"
    )]
    async fn cancel_job(
        &self,
        _auth: ApiToken,
        id: Path<String>,
    ) -> Result<CancelAnswer, Failure<NoInput>> {
        let Ok(job_id) = id.0.trim().parse::<JobId>() else {
            return Ok(CancelAnswer::NotFound(no_such_job(&id.0)));
        };
        let store = &self.state.store;
        let fail = |e| ApiError::from_store("cancelling a job failed", &e);
        if let Some(job) = store.cancel_job(job_id).await.map_err(fail)? {
            return Ok(CancelAnswer::Cancelled(Json(Box::new(JobView::from(&job)))));
        }
        Ok(match store.get_job(job_id).await.map_err(fail)? {
            Some(job) => CancelAnswer::Finished(error_body(
                ErrorCode::Conflict,
                format!("job {} has already {}", job.id, job.status),
            )),
            None => CancelAnswer::NotFound(no_such_job(&id.0)),
        })
    }

    /// The configured schedules (`[[sync.schedules]]`) with their next run and last tick.
    #[oai(
        path = "/api/schedules",
        method = "get",
        operation_id = "listSchedules"
    )]
    async fn list_schedules(
        &self,
        _auth: ApiToken,
    ) -> Result<Json<ScheduleListView>, Failure<NoInput>> {
        let views = schedule::describe(&self.state.store, &self.state.schedules)
            .await
            .map_err(|e| ApiError::from_store("reading schedule ticks failed", &e))?;
        Ok(Json(ScheduleListView {
            results: views.iter().map(ScheduleItemView::from).collect(),
        }))
    }

    /// The original app's push route: enqueues a push (mode `link`).
    #[oai(path = "/sync-contacts", method = "get", operation_id = "syncContacts")]
    async fn sync_contacts(&self, _auth: ApiToken) -> Result<Accepted, Failure<NoInput>> {
        self.enqueue(EnqueueRequest {
            spec: JobSpec::push(),
            trigger: Trigger::Api,
            force: false,
        })
        .await
    }

    /// The original app's pull route: enqueues a full pull (mode `upsert`).
    #[oai(
        path = "/initial-contacts-sync",
        method = "get",
        operation_id = "initialContactsSync"
    )]
    async fn initial_contacts_sync(&self, _auth: ApiToken) -> Result<Accepted, Failure<NoInput>> {
        self.enqueue(EnqueueRequest {
            spec: JobSpec::pull(),
            trigger: Trigger::Api,
            force: false,
        })
        .await
    }
}

impl JobsApi {
    async fn enqueue<D>(&self, request: EnqueueRequest) -> Result<Accepted, Failure<D>> {
        let enqueued = enqueue(&self.state.store, request)
            .await
            .map_err(|e| match e {
                QueueError::Store(e) => ApiError::from_store("enqueueing a job failed", &e),
                other => ApiError::internal("enqueueing a job failed", &other),
            })?;
        Ok(Accepted::of(&enqueued.job))
    }
}
