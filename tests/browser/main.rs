//! The chat page in a real headless Chromium, driven over WebDriver. Each test
//! starts its own chatd process and its own chromedriver; without chromium the
//! tests skip loudly, except under CI=true, where they fail (the same for
//! redis-server, which the history tests start).

mod chat;
mod composer;
mod helpers;
mod history;
mod identity;
mod reconnect;
#[path = "../common/redis_server.rs"]
mod redis_server;
mod rooms;
mod screenshot;
#[path = "../common/server_process.rs"]
mod server_process;
