//! Bugs found by the fuzz targets in fuzz/ (`hub_protocol`), one test each,
//! named after the bug. The crash inputs are kept in
//! fuzz/regressions/hub_protocol/.

use wsline_hub::protocol::{parse, Request};

/// docs/protocol.md: "text that is not a JSON object is answered with a
/// `bad_request` error". The decoder's `#[derive(Deserialize)]` envelope
/// also accepts a JSON array of exactly six elements, read positionally as
/// `[op, id, channel, since, epoch, data]` (serde's derived `visit_seq`):
/// `["subscribe",1,"chat",null,null,null]` subscribes, and an array's
/// second element is echoed as the error's `id`.
#[test]
fn json_array_is_decoded_as_a_request() {
    // The fuzzer's input (fuzz/regressions/hub_protocol/json-array-decoded-as-request):
    // `"op" must be a string`, with id 1 taken from the array.
    let found = "[1,1,2,3,32,3\n\n\n\n\n\n\n\n]";
    match parse(found) {
        Err((id, _)) => assert_eq!(id, None, "an array's element read as the id"),
        Ok((_, r)) => panic!("an array accepted as {r:?}"),
    }
    for text in [
        r#"["subscribe",1,"chat",null,null,null]"#,
        r#"["publish",null,"news",null,null,{"text":"hi"}]"#,
        r#"["ping",7,null,null,null,null]"#,
    ] {
        match parse(text) {
            Err((id, message)) => {
                assert_eq!(id, None, "{text}: an array's element read as the id");
                assert!(!message.is_empty());
            }
            Ok((id, r)) => {
                let what = match r {
                    Request::Subscribe { channel, .. } => format!("subscribe {channel}"),
                    Request::Publish { channel, .. } => format!("publish to {channel}"),
                    other => format!("{other:?}"),
                };
                panic!("{text}: not a JSON object, yet decoded as {what} (id {id:?})");
            }
        }
    }
}
