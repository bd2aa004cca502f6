//! C-ECHO (Verification, PS3.4 Annex A): answers "are you there" with Success.

use super::{CommandField, CommandSet, status};

/// The C-ECHO-RSP to a C-ECHO-RQ: Success, echoing the request's message ID.
pub fn respond(rq: &CommandSet) -> CommandSet {
    rq.response(CommandField::CEchoRsp, status::SUCCESS, None)
}
