//! Kafka's ACL APIs over Eddy's ACLs: CreateAcls and DeleteAcls (Alter on the cluster) and
//! DescribeAcls (Describe on the cluster), answering `SECURITY_DISABLED` when no authorizer
//! runs, as Kafka does.

use eddy_security::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::authorize::Caller;
use super::code;

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

/// Why ACL requests cannot be served: no authorizer, or not allowed.
fn refusal(caller: &Caller<'_>, operation: Operation) -> Option<(i16, &'static str)> {
    match caller.access {
        Some(access) if access.enforces() => (!caller.may_cluster(operation)).then_some((
            code::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        )),
        _ => Some((
            code::SECURITY_DISABLED,
            "No Authorizer is configured on the broker",
        )),
    }
}

/// CreateAcls: each creation valid and stored, or its own error.
pub(super) async fn create(caller: Caller<'_>, request: &CreateAclsRequest) -> CreateAclsResponse {
    let refused = refusal(&caller, Operation::Alter);
    let mut results = Vec::with_capacity(request.creations.len());
    let mut valid = Vec::new();
    let mut slots = Vec::new();
    for creation in &request.creations {
        let binding = (|| {
            Some(AclBinding {
                resource_type: ResourceType::from_code(creation.resource_type)?,
                name: creation.resource_name.to_string(),
                pattern: PatternType::from_code(creation.resource_pattern_type)?,
                principal: creation.principal.to_string(),
                host: creation.host.to_string(),
                operation: Operation::from_code(creation.operation)?,
                permission: Permission::from_code(creation.permission_type)?,
            })
        })();
        let result = match (refused, binding) {
            (Some((error, message)), _) => Err((error, message.to_string())),
            (None, None) => Err((
                code::INVALID_REQUEST,
                "unknown ACL resource, pattern, operation or permission type".to_string(),
            )),
            (None, Some(binding)) => match binding.validate() {
                Ok(()) => {
                    slots.push(results.len());
                    valid.push(binding);
                    Ok(())
                }
                Err(why) => Err((code::INVALID_REQUEST, why)),
            },
        };
        results.push(match result {
            Ok(()) => AclCreationResult::default(),
            Err((error, message)) => AclCreationResult::default()
                .with_error_code(error)
                .with_error_message(text(message)),
        });
    }
    if let (Some(access), false) = (caller.access, valid.is_empty())
        && let Err(e) = access.acls.add(valid).await
    {
        for slot in slots {
            results[slot] = AclCreationResult::default()
                .with_error_code(code::UNKNOWN_SERVER_ERROR)
                .with_error_message(text(e.to_string()));
        }
    }
    CreateAclsResponse::default().with_results(results)
}

fn filter_of(
    (resource_type, name, pattern): (i8, Option<&StrBytes>, i8),
    (principal, host): (Option<&StrBytes>, Option<&StrBytes>),
    (operation, permission): (i8, i8),
) -> Option<AclFilter> {
    Some(AclFilter {
        resource_type: ResourceType::from_code(resource_type)?,
        name: name.map(|n| n.to_string()),
        pattern: PatternType::from_code(pattern)?,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: Operation::from_code(operation)?,
        permission: Permission::from_code(permission)?,
    })
}

/// DescribeAcls: the bindings the filter matches, grouped by resource pattern.
pub(super) fn describe(caller: Caller<'_>, request: &DescribeAclsRequest) -> DescribeAclsResponse {
    if let Some((error, message)) = refusal(&caller, Operation::Describe) {
        return DescribeAclsResponse::default()
            .with_error_code(error)
            .with_error_message(text(message));
    }
    let Some(filter) = filter_of(
        (
            request.resource_type_filter,
            request.resource_name_filter.as_ref(),
            request.pattern_type_filter,
        ),
        (
            request.principal_filter.as_ref(),
            request.host_filter.as_ref(),
        ),
        (request.operation, request.permission_type),
    ) else {
        return DescribeAclsResponse::default()
            .with_error_code(code::INVALID_REQUEST)
            .with_error_message(text("unknown ACL filter type"));
    };
    let bindings = caller
        .access
        .map(|a| a.acls.describe(&filter))
        .unwrap_or_default();
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for b in bindings {
        let description = AclDescription::default()
            .with_principal(StrBytes::from_string(b.principal.clone()))
            .with_host(StrBytes::from_string(b.host.clone()))
            .with_operation(b.operation.code())
            .with_permission_type(b.permission.code());
        match resources.iter_mut().find(|r| {
            r.resource_type == b.resource_type.code()
                && r.resource_name.as_str() == b.name
                && r.pattern_type == b.pattern.code()
        }) {
            Some(resource) => resource.acls.push(description),
            None => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type.code())
                    .with_resource_name(StrBytes::from_string(b.name.clone()))
                    .with_pattern_type(b.pattern.code())
                    .with_acls(vec![description]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

/// DeleteAcls: for each filter, the bindings it removed.
pub(super) async fn delete(caller: Caller<'_>, request: &DeleteAclsRequest) -> DeleteAclsResponse {
    let refused = refusal(&caller, Operation::Alter);
    let mut results = Vec::with_capacity(request.filters.len());
    for f in &request.filters {
        results.push(delete_one(&caller, refused, f).await);
    }
    DeleteAclsResponse::default().with_filter_results(results)
}

async fn delete_one(
    caller: &Caller<'_>,
    refused: Option<(i16, &'static str)>,
    f: &DeleteAclsFilter,
) -> DeleteAclsFilterResult {
    if let Some((error, message)) = refused {
        return DeleteAclsFilterResult::default()
            .with_error_code(error)
            .with_error_message(text(message));
    }
    let Some(filter) = filter_of(
        (
            f.resource_type_filter,
            f.resource_name_filter.as_ref(),
            f.pattern_type_filter,
        ),
        (f.principal_filter.as_ref(), f.host_filter.as_ref()),
        (f.operation, f.permission_type),
    ) else {
        return DeleteAclsFilterResult::default()
            .with_error_code(code::INVALID_REQUEST)
            .with_error_message(text("unknown ACL filter type"));
    };
    let Some(access) = caller.access else {
        return DeleteAclsFilterResult::default();
    };
    match access.acls.remove(&filter).await {
        Ok(removed) => DeleteAclsFilterResult::default().with_matching_acls(
            removed
                .into_iter()
                .map(|b| {
                    DeleteAclsMatchingAcl::default()
                        .with_resource_type(b.resource_type.code())
                        .with_resource_name(StrBytes::from_string(b.name))
                        .with_pattern_type(b.pattern.code())
                        .with_principal(StrBytes::from_string(b.principal))
                        .with_host(StrBytes::from_string(b.host))
                        .with_operation(b.operation.code())
                        .with_permission_type(b.permission.code())
                })
                .collect(),
        ),
        Err(e) => DeleteAclsFilterResult::default()
            .with_error_code(code::UNKNOWN_SERVER_ERROR)
            .with_error_message(text(e.to_string())),
    }
}
