/*
 * isa-check: a deterministic workout of the instructions compilers emit for
 * the x86-64 micro-architecture levels (vectorised loops, glibc's string
 * functions, bit manipulation, CRC32, fused multiply-add, half floats).
 *
 * Ferrovisor's tests build it static with -O3 -march=x86-64-v2 and
 * -march=x86-64-v3, run it on the host and in a Linux guest on the emu
 * CPU, and compare the outputs line by line. glibc refuses to start a
 * binary built for a level the CPU does not report, so the guest's CPUID
 * is checked too. Not part of the test guest's initramfs: the test hands
 * the binary to the guest on a virtio disk.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#define N 4099 /* not a multiple of any vector width: the tails run too */

static uint64_t state = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	return state;
}

static uint64_t fnv(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static int32_t ia[N], ib[N], ic[N];
static float fa[N], fb[N], fc[N];
static double da[N], db[N];
static unsigned char bytes[N + 64];

static void integer_loops(void)
{
	for (int i = 0; i < N; i++) {
		ia[i] = (int32_t)next();
		ib[i] = (int32_t)(next() >> 7);
	}
	for (int i = 0; i < N; i++)
		ic[i] = ia[i] * 3 + (ib[i] >> 2) - (ia[i] ^ ib[i]);
	int64_t sum = 0;
	int32_t mx = INT32_MIN, mn = INT32_MAX;
	for (int i = 0; i < N; i++) {
		sum += ic[i];
		mx = ic[i] > mx ? ic[i] : mx;
		mn = ic[i] < mn ? ic[i] : mn;
	}
	unsigned sat = 0;
	for (int i = 0; i < N; i++) {
		int v = (ia[i] & 0xffff) + (ib[i] & 0xffff);
		sat += v > 0xffff ? 0xffff : v;
	}
	printf("int: sum=%lld max=%d min=%d sat=%u hash=%016llx\n", (long long)sum, mx, mn, sat,
	       (unsigned long long)fnv(ic, sizeof ic));
}

static void float_loops(void)
{
	for (int i = 0; i < N; i++) {
		fa[i] = (float)(int32_t)next() / 65536.0f;
		fb[i] = (float)(int32_t)next() / 1048576.0f;
		da[i] = (double)(int64_t)next() / 4294967296.0;
		db[i] = (double)(i + 1) / 7.0;
	}
	for (int i = 0; i < N; i++)
		fc[i] = fa[i] * fb[i] + fa[i] - fb[i] / 3.0f;
	float fdot = 0;
	for (int i = 0; i < N; i++)
		fdot += fa[i] * fb[i];
	double ddot = 0, dmax = -INFINITY;
	for (int i = 0; i < N; i++) {
		ddot = fma(da[i], db[i], ddot);
		dmax = fmax(dmax, da[i] * db[i]);
	}
	double root = 0;
	for (int i = 0; i < N; i++)
		root += sqrt(fabs(da[i])) + floor(db[i]) + rint(da[i] / 1000.0);
	printf("float: fc=%016llx fdot=%a ddot=%a dmax=%a root=%a\n",
	       (unsigned long long)fnv(fc, sizeof fc), fdot, ddot, dmax, root);
	int conv = 0;
	for (int i = 0; i < N; i++)
		conv += (int)fa[i] + (int)lrint(db[i]) + (int)(float)ia[i];
	printf("convert: %d\n", conv);
}

static void strings(void)
{
	for (int i = 0; i < N + 64; i++)
		bytes[i] = 'a' + next() % 26;
	uint64_t acc = 0;
	for (int len = 0; len < 300; len++) {
		char *s = malloc(len + 1);
		memcpy(s, bytes + len % 61, len);
		s[len] = 0;
		acc = acc * 31 + strlen(s);
		char *p = strchr(s, 'q');
		acc = acc * 31 + (p ? (uint64_t)(p - s) : 999);
		p = memchr(s, 'z', len);
		acc = acc * 31 + (p ? (uint64_t)(p - s) : 777);
		p = strrchr(s, 'e');
		acc = acc * 31 + (p ? (uint64_t)(p - s) : 555);
		acc = acc * 31 + (uint64_t)(memcmp(s, bytes + len % 61, len) == 0);
		char *t = strdup(s);
		if (len > 0)
			t[len - 1] ^= 1;
		acc = acc * 31 + (uint64_t)(strcmp(s, t) > 0) + 2 * (uint64_t)(strcmp(s, t) < 0);
		acc = acc * 31 + strspn(s, "abcdefgh") + strcspn(s, "xyz");
		memset(t, 'k', len);
		acc = acc * 31 + fnv(t, len);
		free(t);
		free(s);
	}
	char buf[512];
	snprintf(buf, sizeof buf, "%s|%.*s", "strings", 40, (char *)bytes);
	printf("strings: %016llx %zu %s\n", (unsigned long long)acc, strlen(buf), buf + 8);
}

static int compare(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

static void bits(void)
{
	uint64_t pop = 0, lz = 0, tz = 0, pdep = 0, pext = 0, rot = 0, misc = 0;
	for (int i = 0; i < 2000; i++) {
		uint64_t x = next(), m = next();
		pop += __builtin_popcountll(x);
		uint64_t y = x >> (i % 64);
		lz += y ? __builtin_clzll(y) : 64;
		tz += __builtin_ctzll(x | (1ull << 63));
#ifdef __BMI2__
		pdep ^= _pdep_u64(x, m);
		pext ^= _pext_u64(x, m);
		rot ^= _bzhi_u64(x, i % 70);
		unsigned long long high;
		misc ^= _mulx_u64(x, m, &high) ^ high;
#endif
#ifdef __BMI__
		misc ^= _blsr_u64(x) ^ _blsi_u64(m) ^ _andn_u64(x, m) ^ _bextr_u64(x, i % 64, 13);
#endif
		rot += (x << (i % 64)) | (x >> (64 - i % 64) % 64);
		misc += (x >> (m % 64)) ^ ((int64_t)m >> (x % 64));
		misc += __builtin_bswap64(x);
	}
	printf("bits: pop=%llu lz=%llu tz=%llu pdep=%016llx pext=%016llx rot=%016llx misc=%016llx\n",
	       (unsigned long long)pop, (unsigned long long)lz, (unsigned long long)tz,
	       (unsigned long long)pdep, (unsigned long long)pext, (unsigned long long)rot,
	       (unsigned long long)misc);
	qsort(ia, N, sizeof ia[0], compare);
	printf("sorted: %d %d %d %016llx\n", ia[0], ia[N / 2], ia[N - 1],
	       (unsigned long long)fnv(ia, sizeof ia));
}

static void special(void)
{
	uint32_t crc = ~0u;
#ifdef __SSE4_2__
	for (int i = 0; i < N; i++)
		crc = _mm_crc32_u8(crc, bytes[i]);
	for (int i = 0; i + 8 <= N; i += 8) {
		uint64_t w;
		memcpy(&w, bytes + i, 8);
		crc = (uint32_t)_mm_crc32_u64(crc, w);
	}
#endif
	uint32_t halves = 0;
#ifdef __F16C__
	for (int i = 0; i < N; i++) {
		unsigned short h = _cvtss_sh(fa[i] / 64.0f, 0);
		float back = _cvtsh_ss(h);
		halves = halves * 33 + h + (uint32_t)(back * 4.0f);
	}
#endif
	printf("special: crc32=%08x half=%08x\n", crc, halves);
}

int main(void)
{
	printf("isa-check: start\n");
	integer_loops();
	float_loops();
	strings();
	bits();
	special();
	printf("isa-check: end\n");
	return 0;
}
