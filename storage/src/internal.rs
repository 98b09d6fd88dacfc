//! The names Eddy keeps for itself: consumer groups starting `_eddy_` (each persistent query's
//! and each materialized table's committed input offsets, which move only in the query's own
//! commits) and topics starting `__eddy_`, kept for Eddy's internal topics as Kafka keeps `__`
//! for its own (the command log and the console's dashboards live in the state store today).
//! Clients may read them; only Eddy writes them.

/// The prefix of Eddy's internal topics.
pub const INTERNAL_TOPIC_PREFIX: &str = "__eddy_";

/// The prefix of the consumer groups Eddy's queries commit their input offsets to.
pub const INTERNAL_GROUP_PREFIX: &str = "_eddy_";

/// Whether `topic` is one of Eddy's own topics, which clients may not write, create or delete.
pub fn is_internal_topic(topic: &str) -> bool {
    topic.starts_with(INTERNAL_TOPIC_PREFIX)
}

/// Whether `group` belongs to one of Eddy's queries, which clients may not join or commit to.
pub fn is_internal_group(group: &str) -> bool {
    group.starts_with(INTERNAL_GROUP_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefixes_are_told_apart() {
        assert!(is_internal_topic("__eddy_command_log"));
        assert!(!is_internal_topic("_eddy_query_CSAS_X_1"));
        assert!(!is_internal_topic("eddy"));
        assert!(is_internal_group("_eddy_query_CSAS_X_1"));
        assert!(is_internal_group("_eddy_table_users"));
        assert!(!is_internal_group("eddy_consumers"));
    }
}
