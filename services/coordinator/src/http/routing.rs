//! A router that remembers what it serves: every route is added with its method through
//! [`Routes`], so the set of served operations can be listed and checked against the OpenAPI
//! document both ways (a route nobody documented fails the test, as does a documented one
//! nobody serves).

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodRouter, delete, get, post};

use crate::app::AppState;

/// Routes being built, and the `(method, path)` of each, methods in lower case as in OpenAPI.
#[derive(Debug, Default)]
pub struct Routes {
    router: Router<AppState>,
    served: Vec<(&'static str, &'static str)>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("get", path, get(handler))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("post", path, post(handler))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("delete", path, delete(handler))
    }

    /// axum merges method routers given for the same path (and panics on a method given twice).
    fn add(mut self, method: &'static str, path: &'static str, route: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, route);
        self.served.push((method, path));
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    /// Every `(method, path)` served, in the order added.
    pub fn served(&self) -> &[(&'static str, &'static str)] {
        &self.served
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
