//! C-ECHO (Verification, PS3.4 Annex A): answers "are you there" with Success.

use super::{CommandField, CommandSet, status};

/// The C-ECHO-RSP to a C-ECHO-RQ: Success, echoing the request's message ID.
pub fn respond(rq: &CommandSet) -> CommandSet {
    rq.response(CommandField::CEchoRsp, status::SUCCESS, None)
}

/// Verification SOP Class UID, the abstract syntax of C-ECHO.
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";

/// The C-ECHO-RQ an SCU sends: Verification, message `message_id`, no data set.
pub fn request(message_id: u16) -> CommandSet {
    CommandSet {
        affected_sop_class_uid: Some(VERIFICATION_SOP_CLASS.to_owned()),
        command_field: CommandField::CEchoRq.code(),
        message_id: Some(message_id),
        data_set_type: super::NO_DATA_SET,
        ..CommandSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_echo_request_is_answered_by_our_own_responder() {
        let rq = CommandSet::decode(&request(9).encode()).unwrap();
        assert_eq!(rq.field(), CommandField::CEchoRq);
        assert_eq!(rq.message_id, Some(9));
        assert!(!rq.has_data_set());
        let rsp = CommandSet::decode(&respond(&rq).encode()).unwrap();
        assert_eq!(rsp.field(), CommandField::CEchoRsp);
        assert_eq!(rsp.message_id_being_responded_to, Some(9));
        assert_eq!(rsp.status, Some(status::SUCCESS));
    }
}
