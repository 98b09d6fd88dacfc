//! Which nodes are in sync with the leader: Kafka's ISR, worked out from what Raft reports.
//!
//! Kafka keeps a follower in the ISR while it caught up with the leader within
//! `replica.lag.time.max.ms`: a follower is caught up as of a moment once it holds everything
//! the leader held at that moment, and it must also keep answering. The same rule holds here,
//! over Raft's matched index of each follower and the last time each one answered the leader.
//! These are pure functions of what was observed, so they are checked as such.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::types::NodeId;

/// Now, in ms on the clock the ISR is measured with: a monotonic one, counted from the first
/// time this process asked. A step of the wall clock (NTP correcting it, an operator setting
/// it) would otherwise drop every follower from the ISR when it jumps ahead, or keep a dead
/// one in it for as long as it jumped back.
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What the leader knows of one follower between observations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The latest moment (in ms on the observer's clock) the follower held all the leader had.
    pub caught_up_at: Option<u64>,
    /// The leader's log end at the previous observation, and when: reaching it later means the
    /// follower was caught up as of then, as Kafka counts a fetch that reaches the end the
    /// leader had at the previous fetch.
    pub target: Option<(u64, u64)>,
}

/// One look at a follower: the index it matched, the leader's log end, and the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The last index the follower is known to hold, if any.
    pub matched: Option<u64>,
    /// The leader's last log index, if any.
    pub leader_end: Option<u64>,
    /// Now, in ms.
    pub now: u64,
}

/// The follower's progress after `seen`.
pub fn observe(progress: FollowerProgress, seen: Observation) -> FollowerProgress {
    let reached = |end: Option<u64>| match (seen.matched, end) {
        (_, None) => true,
        (Some(matched), Some(end)) => matched >= end,
        (None, Some(_)) => false,
    };
    let caught_up_at = if reached(seen.leader_end) {
        Some(seen.now)
    } else {
        match progress.target {
            Some((end, at)) if reached(Some(end)) => {
                Some(progress.caught_up_at.map_or(at, |c| c.max(at)))
            }
            _ => progress.caught_up_at,
        }
    };
    FollowerProgress {
        caught_up_at,
        target: seen.leader_end.map(|end| (end, seen.now)),
    }
}

/// The in-sync nodes, in id order: the leader, and each follower that caught up and answered
/// within `lag` of `now` (`answered` holds when each follower last answered the leader). A
/// follower that has not caught up since this node began leading (at `since`) stays in for the
/// first `lag` of it, as a new Kafka leader keeps the ISR it was given until the lag passes:
/// a live follower has had no time to answer yet.
pub fn in_sync(
    leader: NodeId,
    progress: &BTreeMap<NodeId, FollowerProgress>,
    answered: &BTreeMap<NodeId, u64>,
    (now, since): (u64, u64),
    lag: Duration,
) -> Vec<NodeId> {
    let lag = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
    let recent = |at: Option<u64>| at.is_some_and(|at| now.saturating_sub(at) <= lag);
    let mut nodes: Vec<NodeId> = progress
        .iter()
        .filter(|(id, p)| {
            let caught_up = recent(p.caught_up_at) && recent(answered.get(id).copied());
            let not_yet = p.caught_up_at.is_none() && recent(Some(since));
            **id != leader && (caught_up || not_yet)
        })
        .map(|(id, _)| *id)
        .collect();
    nodes.push(leader);
    nodes.sort_unstable();
    nodes
}

/// How the ISR changed between two looks: whether it lost nodes (a shrink) and whether it
/// gained some (an expand); both at once when one node left as another came back.
pub fn change(before: &[NodeId], after: &[NodeId]) -> (bool, bool) {
    let shrank = before.iter().any(|id| !after.contains(id));
    let expanded = after.iter().any(|id| !before.contains(id));
    (shrank, expanded)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LAG: Duration = Duration::from_millis(1_000);

    /// A run of observations 100 ms apart: how far the leader's log grows each time, and how far
    /// the follower gets (it never passes the leader).
    fn run(steps: &[(u64, u64)]) -> Vec<(FollowerProgress, Observation)> {
        let (mut end, mut matched, mut progress) = (0u64, 0u64, FollowerProgress::default());
        let mut seen = Vec::new();
        for (i, (grow, advance)) in steps.iter().enumerate() {
            end += grow;
            matched = (matched + advance).min(end);
            let observation = Observation {
                matched: Some(matched),
                leader_end: Some(end),
                now: 100 * i as u64,
            };
            progress = observe(progress, observation);
            seen.push((progress, observation));
        }
        seen
    }

    proptest! {
        #[test]
        fn the_leader_is_always_in_sync(followers in proptest::collection::btree_map(2u64..9, (proptest::option::of(0u64..5_000), 0u64..5_000), 0..5), now in 0u64..10_000) {
            let progress = followers.iter().map(|(id, (at, _))| (*id, FollowerProgress { caught_up_at: *at, target: None })).collect();
            let answered = followers.iter().map(|(id, (_, answered))| (*id, *answered)).collect();
            let nodes = in_sync(1, &progress, &answered, (now, 0), LAG);
            prop_assert!(nodes.contains(&1));
            prop_assert!(nodes.iter().all(|id| *id == 1 || followers.contains_key(id)));
        }

        #[test]
        fn caught_up_moments_only_move_forward_and_never_pass_the_observation(steps in proptest::collection::vec((0u64..20, 0u64..20), 1..60)) {
            let mut last = None;
            for (progress, seen) in run(&steps) {
                prop_assert!(progress.caught_up_at >= last);
                prop_assert!(progress.caught_up_at.is_none_or(|at| at <= seen.now));
                last = progress.caught_up_at;
            }
        }

        #[test]
        fn a_follower_that_keeps_up_with_the_leaders_previous_end_stays_in_sync(grows in proptest::collection::vec(0u64..50, 1..60)) {
            // Each time, the follower reaches what the leader had at the previous look.
            let mut progress = FollowerProgress::default();
            let mut end = 0;
            for (i, grow) in grows.iter().enumerate() {
                let previous = end;
                end += grow;
                let now = 100 * i as u64;
                progress = observe(progress, Observation { matched: Some(previous), leader_end: Some(end), now });
                let answered = BTreeMap::from([(2, now)]);
                if i > 0 {
                    prop_assert_eq!(in_sync(1, &BTreeMap::from([(2, progress)]), &answered, (now, 0), LAG), vec![1, 2]);
                }
            }
        }

        #[test]
        fn a_follower_that_stops_while_the_leader_writes_leaves_after_the_lag(stopped_at in 1usize..20, after in 1usize..40) {
            // It keeps up until `stopped_at`, then holds still while the leader grows each look.
            let steps: Vec<(u64, u64)> = (0..stopped_at + after)
                .map(|i| if i < stopped_at { (5, 5) } else { (5, 0) })
                .collect();
            let seen = run(&steps);
            let (progress, observation) = seen[seen.len() - 1];
            let answered = BTreeMap::from([(2, observation.now)]);
            let nodes = in_sync(1, &BTreeMap::from([(2, progress)]), &answered, (observation.now, 0), LAG);
            // Behind since the look after `stopped_at - 1`: 100 ms per look.
            let behind_for = 100 * (after as u64);
            prop_assert_eq!(nodes.contains(&2), behind_for <= 1_000, "behind {} ms: {:?}", behind_for, progress);
        }
    }

    proptest! {
        #[test]
        fn a_follower_not_yet_caught_up_stays_in_for_the_lag_of_a_new_leadership(
            since in 0u64..10_000,
            after in 0u64..3_000,
            answered in proptest::option::of(0u64..10_000),
        ) {
            let now = since + after;
            let progress = BTreeMap::from([(2, FollowerProgress::default())]);
            let answered: BTreeMap<NodeId, u64> = answered.into_iter().map(|at| (2, at)).collect();
            let nodes = in_sync(1, &progress, &answered, (now, since), LAG);
            prop_assert_eq!(nodes.contains(&2), after <= 1_000);
        }

        #[test]
        fn a_change_is_a_shrink_when_nodes_left_and_an_expand_when_nodes_came(
            before in proptest::collection::btree_set(1u64..6, 1..5),
            after in proptest::collection::btree_set(1u64..6, 1..5),
        ) {
            let (a, b): (Vec<_>, Vec<_>) = (before.iter().copied().collect(), after.iter().copied().collect());
            let (shrank, expanded) = change(&a, &b);
            prop_assert_eq!(shrank, !before.is_subset(&after));
            prop_assert_eq!(expanded, !after.is_subset(&before));
            prop_assert_eq!(change(&a, &a), (false, false));
            prop_assert_eq!(change(&b, &a), (expanded, shrank));
        }
    }

    #[test]
    fn a_follower_that_stops_answering_leaves_even_when_nothing_is_written() {
        let idle = |now| Observation {
            matched: Some(7),
            leader_end: Some(7),
            now,
        };
        let progress = observe(FollowerProgress::default(), idle(0));
        let both = BTreeMap::from([(2, progress), (3, progress)]);
        let answered = BTreeMap::from([(2, 0), (3, 0)]);
        assert_eq!(in_sync(1, &both, &answered, (500, 0), LAG), vec![1, 2, 3]);
        // Nothing new is written, so both still hold all the leader has, but node 3 has not
        // answered for 5 s.
        let progress = observe(progress, idle(4_900));
        let both = BTreeMap::from([(2, progress), (3, progress)]);
        let answered = BTreeMap::from([(2, 4_800), (3, 0)]);
        assert_eq!(in_sync(1, &both, &answered, (5_000, 0), LAG), vec![1, 2]);
    }
}
