// train.c — VirTex pretraining: the optimiser (SGD with momentum / AdamW, Lookahead,
// gradient clipping), the learning-rate schedules, and the `virtex train` driver.
// model.h section 9 lists what is here.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
