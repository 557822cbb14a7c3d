#!/bin/bash
# Interleaved: demo config as of 7899776 (paper CMMLF, uniform draws) vs the new demo config; 60 steps each, 3 rounds.
cd /work/main
export OMP_WAIT_POLICY=PASSIVE
for round in 1 2 3; do
  for v in old new; do
    extra=""
    [ $v = old ] && extra="model.cmmlf_sentence=false data.oversample=null"
    out=/tmp/s6/tput/$v$round; rm -rf $out
    .venv/bin/deepspeed --num_gpus 2 launch.py --config configs/demo.yaml --shards /tmp/s6/s2k --output $out --max-steps 70 \
      log.wandb=disabled train.log_every=10 data.eval_limit=16 train.checkpoint_every=100000 $extra > $out.log 2>&1
    echo "$v $round $(grep -c step $out.log)"
  done
done
