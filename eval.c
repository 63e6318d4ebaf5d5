// eval.c — what a trained VirTex is measured by: captions (decoding, CIDEr-D, BLEU,
// attention maps) and the transfer of its ResNet (pooled features, VOC07 SVMs, the
// ImageNet linear probe). model.h section 10 lists what is here.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

// ----------------------------------------------------------------------------
// 10a. captions: decoding and metrics

// ---- end 10a

// ----------------------------------------------------------------------------
// 10b. transfer: features, VOC07 SVMs, linear probe

// ---- end 10b
