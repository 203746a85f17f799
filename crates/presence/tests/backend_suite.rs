//! The behaviour every backend must share, written once and run against each:
//! `memory::<case>` on `Presence::in_memory()`, `redis::<case>` on Redis with
//! a fresh namespace, `cluster::<case>` on a three-master Redis Cluster with
//! a fresh namespace.

#[macro_use]
mod support;

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use pulse_presence::{Admission, ConnectionRecord, OnlineCount, Presence, PresenceError};
use pulse_protocol::{EventKind::*, PresenceEvent, event::now_ms};
use support::{Events, counts, expect, record, register, replay, summary};

every_backend!(
    register_then_query,
    two_connections_one_user,
    register_twice_is_idempotent,
    unregister_unknown_is_a_no_op,
    users_keeps_order,
    unregister_instance_removes_only_that_instance,
    admission_counts_every_instance,
    concurrent_admissions_admit_exactly_the_limit,
    a_block_refuses_new_connections_until_it_ends,
    bad_blocks_are_invalid,
    concurrent_changes_keep_online_and_offline_exact,
    concurrent_duplicates_count_once,
    at_ms_round_trips_exactly,
    odd_ids_round_trip,
    empty_ids_are_invalid,
    user_ids_have_one_length_limit,
    commands_reach_the_listening_instance,
    a_full_command_queue_counts_only_what_it_takes,
);

#[path = "backend_suite/admission.rs"]
mod admission;
#[path = "backend_suite/commands.rs"]
mod commands;
#[path = "backend_suite/concurrency.rs"]
mod concurrency;
#[path = "backend_suite/ids.rs"]
mod ids;
#[path = "backend_suite/state.rs"]
mod state;

use {admission::*, commands::*, concurrency::*, ids::*, state::*};
