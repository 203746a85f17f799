//! The gateway's RFC 6455 frame parser (`pulse_gateway::frame::parse`), the
//! first code that touches every byte a client sends after the upgrade: any
//! input is an answer (a frame, "more bytes", or a close reason), never a
//! panic; what it takes is within what it was given; and a frame it accepts
//! parses the same from exactly its own bytes, and again when re-masked.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_gateway::frame::{Parsed, encode_masked, parse};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limit, so small and large limits both get hit.
    let Some((&limit, bytes)) = data.split_first() else {
        return;
    };
    let max_frame = usize::from(limit) * 4;
    match parse(bytes, max_frame) {
        Ok(Parsed::Frame { frame, used }) => {
            assert!(used <= bytes.len());
            assert!(frame.payload.len() <= max_frame);
            let Ok(Parsed::Frame {
                frame: again,
                used: used_again,
            }) = parse(&bytes[..used], max_frame)
            else {
                panic!("the same bytes parse again, whole");
            };
            assert_eq!(
                (again.fin, again.opcode, &again.payload),
                (frame.fin, frame.opcode, &frame.payload)
            );
            assert_eq!(used_again, used);
            let first = if frame.fin { 0x80 } else { 0 } | frame.opcode.bits();
            let remasked = encode_masked(first, &frame.payload, [0x5a, 0x0f, 0xf0, 0xa5]);
            let Ok(Parsed::Frame { frame: third, .. }) = parse(&remasked, max_frame) else {
                panic!("a re-masked frame parses, whole");
            };
            assert_eq!(third.payload, frame.payload);
        }
        Ok(Parsed::Incomplete {
            needed: Some(needed),
        }) => assert!(needed > bytes.len()),
        Ok(Parsed::Incomplete { needed: None }) | Err(_) => {}
    }
});
