//! The default plugins, grouped by what they look at. PrioritySort lives in the queue
//! and DefaultPreemption in `preemption`.

pub mod inter_pod_affinity;
pub mod node_rules;
pub mod resources;
pub mod topology_spread;

#[cfg(test)]
mod tests;
