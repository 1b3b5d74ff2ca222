/* Frame headers: what is encoded decodes to the same fields, and every
 * damaged or foreign header is refused with its own code (frame.h). */
#include "net/frame.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"

#include "net_test_util.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_header_round_trip) {
    uint64_t seed = nt_seed("test_header_round_trip");
    static uint8_t payload[4096];
    for (int round = 0; round < 200; round++) {
        uint32_t len = (uint32_t)(nt_rand(&seed) % sizeof payload);
        uint8_t type = (uint8_t)(KV_FRAME_HELLO + nt_rand(&seed) % KV_FRAME_RAFT);
        nt_fill(&seed, payload, len);
        uint8_t hdr[KV_FRAME_HEADER_BYTES];
        kv_frame_header_encode(hdr, type, payload, len);
        kv_frame_header h;
        ck_assert_int_eq(kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h), 0);
        ck_assert_uint_eq(h.version, KV_WIRE_VERSION);
        ck_assert_uint_eq(h.type, type);
        ck_assert_uint_eq(h.length, len);
        ck_assert_int_eq(kv_frame_payload_check(&h, payload), 0);
        /* The limit is inclusive: a frame of exactly len_max bytes passes. */
        ck_assert_int_eq(kv_frame_header_decode(hdr, len, &h), 0);
    }
}
END_TEST

START_TEST(test_every_header_byte_is_checked) {
    static const uint8_t payload[] = "some payload";
    uint8_t hdr[KV_FRAME_HEADER_BYTES];
    kv_frame_header_encode(hdr, KV_FRAME_REQUEST, payload, sizeof payload);
    for (size_t i = 0; i < KV_FRAME_HEADER_BYTES; i++)
        for (int bit = 0; bit < 8; bit++) {
            uint8_t bad[KV_FRAME_HEADER_BYTES];
            memcpy(bad, hdr, sizeof bad);
            bad[i] ^= (uint8_t)(1u << bit);
            kv_frame_header h;
            ck_assert_msg(kv_frame_header_decode(bad, KV_FRAME_BYTES_MAX, &h) == KV_EPROTO,
                          "byte %zu bit %d flipped was not refused", i, bit);
        }
}
END_TEST

/* Rewrites the header checksum so only the field changed is wrong. */
static void reseal(uint8_t hdr[KV_FRAME_HEADER_BYTES]) {
    kv_put_u64(hdr + 24, kv_xxh3(hdr, 24));
}

START_TEST(test_refusals) {
    static const uint8_t payload[] = "0123456789";
    uint8_t hdr[KV_FRAME_HEADER_BYTES];
    kv_frame_header h;

    kv_frame_header_encode(hdr, KV_FRAME_HELLO, payload, sizeof payload);
    kv_put_u32(hdr, 0x50545448u); /* "HTTP" */
    reseal(hdr);
    ck_assert_int_eq(kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h), KV_EPROTO);

    kv_frame_header_encode(hdr, KV_FRAME_HELLO, payload, sizeof payload);
    hdr[4] = KV_WIRE_VERSION + 1;
    reseal(hdr);
    ck_assert_int_eq(kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h), KV_EVERSION);

    kv_frame_header_encode(hdr, 0, payload, sizeof payload);
    ck_assert_int_eq(kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h), KV_EINVAL);
    kv_frame_header_encode(hdr, KV_FRAME_RAFT + 1, payload, sizeof payload);
    ck_assert_int_eq(kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h), KV_EINVAL);

    /* One byte over the limit; checked before a payload byte is read. */
    kv_frame_header_encode(hdr, KV_FRAME_RAFT, payload, sizeof payload);
    ck_assert_int_eq(kv_frame_header_decode(hdr, sizeof payload - 1, &h), KV_ETOOBIG);
    kv_put_u32(hdr + 8, KV_FRAME_BYTES_MAX + 1);
    reseal(hdr);
    ck_assert_int_eq(kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h), KV_ETOOBIG);
    ck_assert_uint_eq(h.length, KV_FRAME_BYTES_MAX + 1);

    kv_frame_header_encode(hdr, KV_FRAME_RAFT, payload, sizeof payload);
    ck_assert_int_eq(kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h), 0);
    uint8_t damaged[sizeof payload];
    for (size_t i = 0; i < sizeof payload; i++) {
        memcpy(damaged, payload, sizeof payload);
        damaged[i] ^= 0x20;
        ck_assert_int_eq(kv_frame_payload_check(&h, damaged), KV_ECORRUPT);
    }
}
END_TEST

START_TEST(test_pack_unpack) {
    Kv__Request req = KV__REQUEST__INIT;
    req.id = 77;
    req.type = KV__REQUEST__TYPE__PUT;
    req.key.data = (uint8_t *)"k";
    req.key.len = 1;
    req.value.data = (uint8_t *)"value";
    req.value.len = 5;
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(kv_frame_pack(KV_FRAME_REQUEST, &req.base, &buf, &len), 0);
    ck_assert_uint_eq(len, kv_frame_size(&req.base));
    kv_frame_header h;
    ck_assert_int_eq(kv_frame_header_decode(buf, KV_FRAME_BYTES_MAX, &h), 0);
    ck_assert_uint_eq(h.type, KV_FRAME_REQUEST);
    ck_assert_uint_eq(KV_FRAME_HEADER_BYTES + h.length, len);
    ck_assert_int_eq(kv_frame_payload_check(&h, buf + KV_FRAME_HEADER_BYTES), 0);
    Kv__Request *back = kv__request__unpack(NULL, h.length, buf + KV_FRAME_HEADER_BYTES);
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(back->id, 77);
    ck_assert_int_eq(back->type, KV__REQUEST__TYPE__PUT);
    ck_assert(nt_bytes_eq(back->value.data, back->value.len, "value", 5));
    kv__request__free_unpacked(back, NULL);
    free(buf);
}
END_TEST

int main(void) {
    Suite *s = suite_create("net_frame");
    TCase *tc = tcase_create("frame");
    tcase_add_test(tc, test_header_round_trip);
    tcase_add_test(tc, test_every_header_byte_is_checked);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_pack_unpack);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
