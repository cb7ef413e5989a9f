//! The REST routing table, built once at start-up from the `google.api.http` options in the
//! embedded descriptor set — so an annotated RPC gets a REST route without any code here.
//!
//! Every binding (and every `additional_bindings` entry) becomes a [`Route`] whose field
//! paths are resolved against the request message up front: a rule naming a field that does
//! not exist stops the gateway at start-up instead of failing requests later.

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};
use stockmesh::Target;

use crate::template::PathTemplate;

/// What of the request message the HTTP body carries.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body: every field comes from the path or the query string.
    None,
    /// `body: "*"`: the whole message except path fields.
    All,
    /// `body: "<field>"`: one top-level field; the rest from path and query.
    Field(FieldDescriptor),
}

/// One REST binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub http_method: Method,
    pub template: PathTemplate,
    /// Resolved field chain per template variable, in template order.
    pub path_fields: Vec<Vec<FieldDescriptor>>,
    pub body: BodyRule,
    /// `response_body`: only this field of the response is returned.
    pub response_body: Option<FieldDescriptor>,
    pub method: MethodDescriptor,
    pub target: Target,
    /// `/package.Service/Method`.
    pub grpc_path: String,
    /// Label for logs and metrics: `GET /v1/products/{id}`.
    pub label: String,
}

/// Result of looking a request up.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a Route, Vec<String>),
    /// The path exists, but not for this method; the methods it has.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// All REST routes, most specific first.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

/// Why the descriptor set cannot be turned into routes.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the descriptor set has no google.api.http extension")]
    NoHttpExtension,
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    #[error("{method}: {why}")]
    Rule { method: String, why: String },
}

impl Routes {
    /// Reads the rules of every method of the four stockmesh services in `pool`.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, RouteError> {
        let ext = pool
            .get_extension_by_name("google.api.http")
            .ok_or(RouteError::NoHttpExtension)?;
        let mut routes = Vec::new();
        for target in Target::SERVICES {
            let Some(service) = pool.get_service_by_name(target.grpc_service()) else {
                continue;
            };
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&ext) {
                    continue;
                }
                if let Value::Message(rule) = options.get_extension(&ext).as_ref() {
                    add_rule(&mut routes, rule, &method, target, true)?;
                }
            }
        }
        // Stable sort: among equally specific templates, declaration order decides.
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
        Ok(Self { routes })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the route for `method` and `path` (no query string).
    pub fn find(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(values) = route.template.matches(path) {
                if route.http_method == *method {
                    return Lookup::Found(route, values);
                }
                if !allowed.contains(&route.http_method) {
                    allowed.push(route.http_method.clone());
                }
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed(allowed)
        }
    }
}

fn add_rule(
    routes: &mut Vec<Route>,
    rule: &DynamicMessage,
    method: &MethodDescriptor,
    target: Target,
    top_level: bool,
) -> Result<(), RouteError> {
    let fail = |why: String| RouteError::Rule {
        method: method.full_name().to_string(),
        why,
    };
    let text = |name: &str| -> String {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let mut binding = None;
    for (name, m) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            binding = Some((m, text(name)));
        }
    }
    if rule.has_field_by_name("custom")
        && let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref()
    {
        let kind = custom
            .get_field_by_name("kind")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let path = custom
            .get_field_by_name("path")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let m = Method::from_bytes(kind.as_bytes())
            .map_err(|_| fail(format!("bad custom method {kind:?}")))?;
        binding = Some((m, path));
    }
    if let Some((http_method, path)) = binding {
        let template = PathTemplate::parse(&path)?;
        let input = method.input();
        let path_fields = template
            .variables()
            .iter()
            .map(|v| resolve_path(&input, &v.field_path).map_err(&fail))
            .collect::<Result<Vec<_>, _>>()?;
        let body = match text("body").as_str() {
            "" => BodyRule::None,
            "*" => BodyRule::All,
            name => BodyRule::Field(
                input
                    .get_field_by_name(name)
                    .ok_or_else(|| fail(format!("body field {name:?} does not exist")))?,
            ),
        };
        let response_body = match text("response_body").as_str() {
            "" => None,
            name => Some(
                method
                    .output()
                    .get_field_by_name(name)
                    .ok_or_else(|| fail(format!("response_body field {name:?} does not exist")))?,
            ),
        };
        let label = format!("{http_method} {}", template.as_str());
        routes.push(Route {
            http_method,
            template,
            path_fields,
            body,
            response_body,
            method: method.clone(),
            target,
            grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
            label,
        });
    }
    if top_level
        && let Some(extra) = rule.get_field_by_name("additional_bindings")
        && let Some(list) = extra.as_list()
    {
        for item in list {
            if let Value::Message(m) = item {
                add_rule(routes, m, method, target, false)?;
            }
        }
    }
    Ok(())
}

/// Resolves `a.b.c` against `msg`: every step but the last a singular message field, the
/// last a singular non-message field (path variables are plain values).
pub fn resolve_path(
    msg: &MessageDescriptor,
    path: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut chain = Vec::with_capacity(path.len());
    let mut current = msg.clone();
    for (i, name) in path.iter().enumerate() {
        let field = current
            .get_field_by_name(name)
            .ok_or_else(|| format!("path field {:?} does not exist", path.join(".")))?;
        if field.is_list() || field.is_map() {
            return Err(format!("path field {:?} is repeated", path.join(".")));
        }
        let last = i + 1 == path.len();
        match field.kind() {
            Kind::Message(m) if !last => current = m,
            Kind::Message(_) => {
                return Err(format!("path field {:?} is a message", path.join(".")));
            }
            _ if !last => {
                return Err(format!("path field {:?} is not a message", name));
            }
            _ => {}
        }
        chain.push(field);
    }
    Ok(chain)
}
