//! The reload diff: which channels of a new configuration would behave exactly as the running
//! ones (line numbers aside), so that a reload keeps them running untouched.

use crate::config::ChannelConfig;

impl ChannelConfig {
    /// Whether two channel configurations would behave the same (line numbers aside): a
    /// reload keeps such a channel running untouched.
    pub fn same_settings(&self, other: &ChannelConfig) -> bool {
        self.name == other.name
            && self.input == other.input
            && self.framing == other.framing
            && self.records == other.records
            && self.samples == other.samples
            && self.splice == other.splice
            && self.producer == other.producer
            && self.commands == other.commands
            && self.outputs.len() == other.outputs.len()
            && self.outputs.iter().zip(&other.outputs).all(|(a, b)| {
                a.endpoint == b.endpoint
                    && a.on_slow == b.on_slow
                    && a.max_backlog == b.max_backlog
                    && a.fault_grace == b.fault_grace
                    && a.spool == b.spool
            })
    }
}
