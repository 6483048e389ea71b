//! Service: what a route sends to. A `replicated` service is one pool of
//! identical endpoints.

use crate::upstream::Pool;

pub struct Service {
    pub name: String,
    pub pool: Pool,
}
