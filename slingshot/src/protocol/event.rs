//! Events out of a stage: the message a named event travels as, and its routing key on the topic exchange.
//!
//! An event is a request message (the ID in decimal ASCII), so a
//! subscriber is an ordinary service; its name, the service that emitted it
//! and its data travel in headers. The routing key is `<service>.<event>`.

use super::inbound::output_message_id;
use crate::broker::{HeaderValue, Message};

/// Header: the event's name (`progress`, `invalid-input`, ...).
pub const EVENT_HEADER: &str = "x-slingshot-event";
/// Header: the service that emitted the event.
pub const EVENT_SERVICE_HEADER: &str = "x-slingshot-event-service";
/// Header: the event's data, text; absent when it has none.
pub const EVENT_DATA_HEADER: &str = "x-slingshot-event-data";

/// The routing key of event `name` emitted by `service`.
pub fn event_key(service: &str, name: &str) -> String {
    format!("{service}.{name}")
}

/// The message of the `nth` event of a request (identity `inbound`, ID
/// `request`) to `exchange`: its message ID is derived like an output's, so
/// the same run of the same request publishes the same IDs.
pub fn event_message(
    exchange: &str,
    service: &str,
    request: u64,
    name: &str,
    data: &str,
    inbound: &str,
    nth: u32,
) -> Message {
    let key = event_key(service, name);
    let mut message = Message::id(request)
        .with_header(EVENT_HEADER, HeaderValue::Str(name.to_string()))
        .with_header(EVENT_SERVICE_HEADER, HeaderValue::Str(service.to_string()));
    if !data.is_empty() {
        message = message.with_header(EVENT_DATA_HEADER, HeaderValue::Str(data.to_string()));
    }
    message.properties.message_id = Some(output_message_id(inbound, &format!("{exchange}/{key}"), request, nth));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_request_message_with_its_name_service_and_data() {
        let message = event_message("ev", "tokenize", 7, "progress", "50%", "m-1", 0);
        assert_eq!(&message.body[..], b"7");
        assert_eq!(message.headers[EVENT_HEADER].as_str(), Some("progress"));
        assert_eq!(message.headers[EVENT_SERVICE_HEADER].as_str(), Some("tokenize"));
        assert_eq!(message.headers[EVENT_DATA_HEADER].as_str(), Some("50%"));
        let again = event_message("ev", "tokenize", 7, "progress", "50%", "m-1", 0);
        assert_eq!(message.properties.message_id, again.properties.message_id);
        let second = event_message("ev", "tokenize", 7, "progress", "", "m-1", 1);
        assert_ne!(message.properties.message_id, second.properties.message_id);
        assert!(!second.headers.contains_key(EVENT_DATA_HEADER));
        assert_eq!(event_key("tokenize", "progress"), "tokenize.progress");
    }
}
