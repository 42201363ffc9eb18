//! `[threads]`: conversations and their limits.

use super::*;

/// Who may use a thread: any live session of its owner, or only the session that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThreadBinding {
    #[default]
    User,
    Session,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThreadsConfig {
    pub binding: ThreadBinding,
    pub max_threads_per_user: u32,
    pub max_messages_per_thread: u32,
    /// Longest accepted user message, in characters (413 above).
    pub max_message_chars: usize,
    /// How much stored history goes into a prompt, in (approximate) tokens.
    pub history_budget_tokens: usize,
    /// Chat requests (thread messages and completions) per user per minute (429 above).
    pub chat_requests_per_minute: u32,
}

impl Default for ThreadsConfig {
    fn default() -> Self {
        Self {
            binding: ThreadBinding::User,
            max_threads_per_user: 1000,
            max_messages_per_thread: 1000,
            max_message_chars: 32_000,
            history_budget_tokens: 3000,
            chat_requests_per_minute: 60,
        }
    }
}

impl ThreadsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.max_message_chars == 0 || self.chat_requests_per_minute == 0 {
            return bad("threads limits must be at least 1");
        }
        Ok(())
    }
}
