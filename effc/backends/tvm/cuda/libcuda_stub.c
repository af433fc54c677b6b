/* A stand-in for the NVIDIA driver's libcuda.so.1 on a machine without a GPU: every entry point fails with
   CUDA_ERROR_NO_DEVICE (100), so TVM's CUDA runtime loads (and can embed compiled kernels) but runs nothing. */
typedef int CUresult;
#define NO_DEVICE 100
static const char message[] = "no CUDA device (effc's build-time stub of libcuda.so.1)";
CUresult cuDeviceGetName(char *name, int len, int dev) { (void)name; (void)len; (void)dev; return NO_DEVICE; }
CUresult cuFuncSetAttribute(void *f, int a, int v) { (void)f; (void)a; (void)v; return NO_DEVICE; }
CUresult cuGetErrorName(CUresult e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
CUresult cuGetErrorString(CUresult e, const char **s) { (void)e; *s = message; return 0; }
CUresult cuLaunchKernelEx(const void *c, void *f, void **p, void **x) { (void)c; (void)f; (void)p; (void)x; return NO_DEVICE; }
CUresult cuModuleGetFunction(void **f, void *m, const char *n) { (void)f; (void)m; (void)n; return NO_DEVICE; }
CUresult cuModuleLoadData(void **m, const void *d) { (void)m; (void)d; return NO_DEVICE; }
CUresult cuModuleUnload(void *m) { (void)m; return NO_DEVICE; }
CUresult cuTensorMapEncodeTiled(void *t, int a, unsigned r, void *g, const void *d, const void *s, const void *b,
                                const void *e, int i, int w, int p, int o) {
  (void)t; (void)a; (void)r; (void)g; (void)d; (void)s; (void)b; (void)e; (void)i; (void)w; (void)p; (void)o;
  return NO_DEVICE;
}
