//! Cluster mode's consistency rule, checked as a property: several nodes'
//! [`Counters`] share one "database"; they click, take batches, commit them
//! (or hold them in flight, as a write whose answer is pending), read back
//! what they committed and send it to the others over a network that
//! loses, repeats and reorders messages, and read the global total on
//! their own. After every step no node shows more than the true total of
//! any counter and no shown total went down; once clicks stop, every node
//! has flushed and read the database once more, every node shows exactly
//! the database.

use std::collections::HashMap;

use proptest::prelude::*;
use tally::conversation::ConversationId;
use tally::counter::{CounterKey, Counters, Delta};
use tally::user::Username;

const NODES: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    /// A click on a node, by one of a few users (or nobody), in one of two
    /// rooms (or none).
    Click {
        node: usize,
        user: Option<u8>,
        room: Option<u8>,
    },
    /// A node takes its pending deltas into a batch in flight.
    Take { node: usize },
    /// A node's batch in flight commits; the node reads back its keys,
    /// merges them and sends them.
    Commit { node: usize },
    /// A message is delivered to a node; it may stay on the network (a
    /// repeat later) or be lost.
    Deliver {
        message: usize,
        node: usize,
        keep: bool,
    },
    /// A message is lost.
    Lose { message: usize },
    /// A node reads the global total from the database.
    ReadGlobal { node: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..NODES, prop::option::of(0u8..3), prop::option::of(0u8..2))
            .prop_map(|(node, user, room)| Step::Click { node, user, room }),
        1 => (0..NODES).prop_map(|node| Step::Take { node }),
        1 => (0..NODES).prop_map(|node| Step::Commit { node }),
        2 => (0usize..16, 0..NODES, any::<bool>())
            .prop_map(|(message, node, keep)| Step::Deliver { message, node, keep }),
        1 => (0usize..16).prop_map(|message| Step::Lose { message }),
        1 => (0..NODES).prop_map(|node| Step::ReadGlobal { node }),
    ]
}

fn user(i: u8) -> Username {
    Username::parse(&format!("user{i}")).unwrap()
}

fn room(i: u8) -> ConversationId {
    ConversationId::parse(&format!("room{i}")).unwrap()
}

/// Every key the steps can touch.
fn keys() -> Vec<CounterKey> {
    let mut keys = vec![CounterKey::Global];
    keys.extend((0..3).map(|i| CounterKey::User(user(i))));
    keys.extend((0..2).map(|i| CounterKey::Room(room(i))));
    keys
}

fn shown(counters: &Counters, key: &CounterKey) -> u64 {
    match key {
        CounterKey::Global => counters.global().total(),
        CounterKey::User(name) => counters.user_total(name).unwrap_or(0),
        CounterKey::Room(id) => counters.room_total(id),
    }
}

struct World {
    nodes: Vec<Counters>,
    in_flight: Vec<Option<Vec<Delta>>>,
    database: HashMap<CounterKey, u64>,
    network: Vec<Vec<(CounterKey, u64)>>,
    /// Clicks accepted, per key: the true totals.
    truth: HashMap<CounterKey, u64>,
    last_shown: Vec<HashMap<CounterKey, u64>>,
}

impl World {
    fn new() -> Self {
        World {
            nodes: (0..NODES).map(|_| Counters::from_totals([])).collect(),
            in_flight: vec![None; NODES],
            database: HashMap::new(),
            network: Vec::new(),
            truth: HashMap::new(),
            last_shown: vec![HashMap::new(); NODES],
        }
    }

    fn read(&self, keys: &[CounterKey]) -> Vec<(CounterKey, u64)> {
        keys.iter()
            .filter_map(|key| Some((key.clone(), *self.database.get(key)?)))
            .collect()
    }

    fn take(&mut self, node: usize) {
        if self.in_flight[node].is_none() {
            self.in_flight[node] = Some(self.nodes[node].take_pending());
        }
    }

    fn commit(&mut self, node: usize) {
        let Some(batch) = self.in_flight[node].take() else {
            return;
        };
        for delta in &batch {
            *self.database.entry(delta.key.clone()).or_default() += delta.amount;
        }
        let keys: Vec<CounterKey> = batch.into_iter().map(|delta| delta.key).collect();
        let committed = self.read(&keys);
        self.nodes[node].merge(&committed);
        self.network.push(committed);
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Click {
                node,
                user: who,
                room: place,
            } => {
                let name = who.map(user);
                let id = place.map(room);
                self.nodes[node]
                    .click_in(name.as_ref(), id.as_ref())
                    .unwrap();
                *self.truth.entry(CounterKey::Global).or_default() += 1;
                if let Some(name) = name {
                    *self.truth.entry(CounterKey::User(name)).or_default() += 1;
                }
                if let Some(id) = id {
                    *self.truth.entry(CounterKey::Room(id)).or_default() += 1;
                }
            }
            Step::Take { node } => self.take(node),
            Step::Commit { node } => self.commit(node),
            Step::Deliver {
                message,
                node,
                keep,
            } => {
                if self.network.is_empty() {
                    return;
                }
                let at = message % self.network.len();
                let totals = if keep {
                    self.network[at].clone()
                } else {
                    self.network.remove(at)
                };
                self.nodes[node].merge(&totals);
            }
            Step::Lose { message } => {
                if !self.network.is_empty() {
                    let at = message % self.network.len();
                    self.network.remove(at);
                }
            }
            Step::ReadGlobal { node } => {
                let global = self.read(&[CounterKey::Global]);
                self.nodes[node].merge(&global);
            }
        }
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        for (node, counters) in self.nodes.iter().enumerate() {
            for key in keys() {
                let now = shown(counters, &key);
                let truth = self.truth.get(&key).copied().unwrap_or(0);
                prop_assert!(now <= truth, "node {node} shows {now} > {truth} for {key}");
                let before = self.last_shown[node].insert(key.clone(), now).unwrap_or(0);
                prop_assert!(
                    now >= before,
                    "node {node}'s {key} went from {before} to {now}"
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_node_overshoots_or_goes_back_and_all_end_on_the_database(
        steps in prop::collection::vec(step(), 1..200)
    ) {
        let mut world = World::new();
        for step in &steps {
            world.apply(step);
            world.check()?;
        }
        // Clicks stop: every batch in flight commits, every node flushes
        // what is left, and reads every total once (a reload).
        for node in 0..NODES {
            world.commit(node);
            world.take(node);
            world.commit(node);
        }
        let everything = world.read(&keys());
        for counters in &world.nodes {
            counters.merge(&everything);
        }
        world.check()?;
        for (node, counters) in world.nodes.iter().enumerate() {
            for key in keys() {
                let stored = world.database.get(&key).copied().unwrap_or(0);
                prop_assert_eq!(stored, world.truth.get(&key).copied().unwrap_or(0));
                prop_assert_eq!(shown(counters, &key), stored, "node {} on {}", node, key);
            }
        }
    }
}
