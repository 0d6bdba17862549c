//! The chat page in a real headless Chromium, driven over WebDriver. Each test
//! starts its own chatd process and its own chromedriver; without chromium the
//! tests skip loudly, except under CI=true, where they fail.

mod chat;
mod composer;
mod helpers;
mod reconnect;
mod rooms;
mod screenshot;
#[path = "../common/server_process.rs"]
mod server_process;
