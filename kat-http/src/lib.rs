//! # kat-http
//!
//! Will hold the API that plugin containers call (hyper 1.x): objects, files, tasks, schedules, plugins
//! and organizations under `/api/v1/`, authenticated with short-lived JWTs whose permissions are scoped
//! to one task, and `JwtAuthority`, the `TokenAuthority` on jsonwebtoken.
