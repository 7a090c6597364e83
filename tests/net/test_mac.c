/* Unit tests for net/mac: strict parsing, formatting, validation, generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>

#include "net/mac.h"

static void test_parse_format_roundtrip(void **state) {
        static const char *good[] = {
                "52:54:00:12:34:56", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff",
                "00:16:3e:ab:cd:ef", "01:00:5e:00:00:01",
        };
        for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
                uint8_t mac[MAC_LEN];
                char s[MAC_STRLEN];
                assert_int_equal(mac_parse(good[i], mac), 0);
                mac_format(mac, s);
                assert_string_equal(s, good[i]);
        }

        uint8_t mac[MAC_LEN];
        assert_int_equal(mac_parse("52:54:00:12:34:56", mac), 0);
        assert_memory_equal(mac, ((uint8_t[]){ 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 }), MAC_LEN);
}

static void test_parse_uppercase_formats_lowercase(void **state) {
        uint8_t mac[MAC_LEN];
        char s[MAC_STRLEN];
        assert_int_equal(mac_parse("52:54:00:AB:cD:Ef", mac), 0);
        assert_memory_equal(mac, ((uint8_t[]){ 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef }), MAC_LEN);
        mac_format(mac, s);
        assert_string_equal(s, "52:54:00:ab:cd:ef");
}

static void test_format_parse_every_byte(void **state) {
        for (unsigned b = 0; b < 256; b++) {
                uint8_t in[MAC_LEN] = { (uint8_t)b, (uint8_t)~b, (uint8_t)(b * 7), 0, (uint8_t)(b ^ 0x5a), 0xff };
                uint8_t out[MAC_LEN];
                char s[MAC_STRLEN];
                mac_format(in, s);
                assert_int_equal(strlen(s), MAC_STRLEN - 1);
                assert_int_equal(mac_parse(s, out), 0);
                assert_memory_equal(in, out, MAC_LEN);
        }
}

static void test_parse_rejects(void **state) {
        static const char *bad[] = {
                "",
                "52:54:00:12:34",               /* too short */
                "52:54:00:12:34:5",             /* last group one digit */
                "52:54:00:12:34:567",           /* trailing junk */
                "52:54:00:12:34:56:78",         /* seven groups */
                "52:54:00:12:34:56 ",           /* trailing space */
                "52:54:00:12:34:56\n",          /* trailing newline */
                " 52:54:00:12:34:56",           /* leading space */
                "52-54-00-12-34-56",            /* wrong separator */
                "5254.0012.3456",               /* Cisco notation */
                "525400123456",                 /* no separators */
                "52:54:00:12:34:5g",            /* bad hex */
                "g2:54:00:12:34:56",
                "52:54:0x:12:34:56",
                "5:254:00:12:34:56",            /* misplaced separator */
                "52::54:00:12:34:5",
                "52:54:00:12:34:-6",
                "+2:54:00:12:34:56",
        };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
                uint8_t mac[MAC_LEN];
                memset(mac, 0xaa, sizeof mac);
                assert_int_equal(mac_parse(bad[i], mac), -EINVAL);
                /* ret_ is written only on success */
                assert_memory_equal(mac, ((uint8_t[]){ 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa }), MAC_LEN);
        }
        uint8_t mac[MAC_LEN];
        assert_int_equal(mac_parse(NULL, mac), -EINVAL);
}

static void test_parse_does_not_overread(void **state) {
        /* A short string in a heap block of exactly its size: under
         * -Db_sanitize=address any read past its NUL is reported. */
        char *s = malloc(6);
        assert_non_null(s);
        memcpy(s, "52:54", 6);
        uint8_t mac[MAC_LEN];
        assert_int_equal(mac_parse(s, mac), -EINVAL);
        free(s);
}

static void test_validate(void **state) {
        char err[128];

        assert_int_equal(mac_validate((uint8_t[]){ 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 }, err, sizeof err), 0);
        assert_int_equal(mac_validate((uint8_t[]){ 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01 }, err, sizeof err), 0);
        /* locally administered unicast */
        assert_int_equal(mac_validate((uint8_t[]){ 0x02, 0x00, 0x00, 0x00, 0x00, 0x01 }, err, sizeof err), 0);

        assert_int_equal(mac_validate((uint8_t[]){ 0, 0, 0, 0, 0, 0 }, err, sizeof err), -EINVAL);
        assert_string_equal(err, "MAC address 00:00:00:00:00:00 is all zero");

        assert_int_equal(mac_validate((uint8_t[]){ 0x01, 0x00, 0x5e, 0x00, 0x00, 0x01 }, err, sizeof err), -EINVAL);
        assert_string_equal(err, "MAC address 01:00:5e:00:00:01 is a multicast address (first octet odd)");

        assert_int_equal(mac_validate((uint8_t[]){ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, err, sizeof err), -EINVAL);
        assert_string_equal(err, "MAC address ff:ff:ff:ff:ff:ff is a multicast address (first octet odd)");

        assert_int_equal(mac_validate((uint8_t[]){ 0x53, 0x54, 0x00, 0x12, 0x34, 0x56 }, err, sizeof err), -EINVAL);
        assert_string_equal(err, "MAC address 53:54:00:12:34:56 is a multicast address (first octet odd)");

        /* ERR is optional */
        assert_int_equal(mac_validate((uint8_t[]){ 0x33, 0x33, 0, 0, 0, 1 }, NULL, 0), -EINVAL);
        assert_int_equal(mac_validate((uint8_t[]){ 0, 0, 0, 0, 0, 0 }, NULL, 0), -EINVAL);
}

static int cmp_mac(const void *a, const void *b) {
        return memcmp(a, b, MAC_LEN);
}

static void test_generate(void **state) {
        enum { N = 200 };
        uint8_t macs[N][MAC_LEN];

        for (int i = 0; i < N; i++) {
                char err[128] = "";
                assert_int_equal(mac_generate(macs[i]), 0);
                assert_memory_equal(macs[i], ((uint8_t[]){ 0x52, 0x54, 0x00 }), 3);
                assert_int_equal(mac_validate(macs[i], err, sizeof err), 0);

                char s[MAC_STRLEN];
                uint8_t back[MAC_LEN];
                mac_format(macs[i], s);
                assert_int_equal(mac_parse(s, back), 0);
                assert_memory_equal(back, macs[i], MAC_LEN);
        }
        /* 24 random bits: among 200 draws a handful of duplicates at the
         * very most (expected 0.001), never mostly the same value. */
        qsort(macs, N, MAC_LEN, cmp_mac);
        int dups = 0;
        for (int i = 1; i < N; i++)
                dups += memcmp(macs[i - 1], macs[i], MAC_LEN) == 0;
        assert_true(dups <= 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_format_roundtrip),
                cmocka_unit_test(test_parse_uppercase_formats_lowercase),
                cmocka_unit_test(test_format_parse_every_byte),
                cmocka_unit_test(test_parse_rejects),
                cmocka_unit_test(test_parse_does_not_overread),
                cmocka_unit_test(test_validate),
                cmocka_unit_test(test_generate),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
