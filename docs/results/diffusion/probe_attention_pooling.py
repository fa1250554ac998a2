# Probe (2026-11-23, CPU): does cross-attention pooling rank the true colour first on the demo model?
# Run from the repo root: python docs/results/diffusion/probe_attention_pooling.py
# Result: lse_all 0.31, lse_content 0.25, lse_no_sos 0.31, max_content 0.00 (16 single-object test images, 4 colours, chance 0.25).
import os, torch, numpy as np
os.environ["HF_HUB_OFFLINE"]="1"
from diffusers import AutoencoderKL, UNet2DConditionModel, DDIMScheduler
from transformers import CLIPTextModel, CLIPTokenizer
from training.world import iter_split, COLOURS
d="discff_cli/assets/demo/diffusion"
vae=AutoencoderKL.from_pretrained(d,subfolder="vae").eval(); unet=UNet2DConditionModel.from_pretrained(d,subfolder="unet").eval()
te=CLIPTextModel.from_pretrained(d,subfolder="text_encoder").eval(); tok=CLIPTokenizer.from_pretrained(d,subfolder="tokenizer")
ac=DDIMScheduler.from_pretrained(d,subfolder="scheduler").alphas_cumprod
store=[]
def hook(mod, args, kwargs):
    h=args[0] if args else kwargs["hidden_states"]; e=kwargs["encoder_hidden_states"]
    q=mod.to_q(h); k=mod.to_k(e); H=mod.heads; B,N,C=q.shape; dh=C//H
    q=q.view(B,N,H,dh).transpose(1,2); k=k.view(B,-1,H,dh).transpose(1,2)
    store.append(q@k.transpose(-1,-2)/dh**0.5)  # B,H,N,77
for n,m in unet.named_modules():
    if n.endswith("attn2"): m.register_forward_pre_hook(hook, with_kwargs=True)
ts=torch.tensor([200,400,600,800]); g=torch.Generator().manual_seed(0)
res={k:[] for k in ("lse_all","lse_content","lse_no_sos","max_content")}
for _,ex in iter_split("test",16,0,n_objects=1):
    o=ex.scene.objects[0]; texts=[f"a {c} {o.shape}" for c in COLOURS]; true=COLOURS.index(o.colour)
    ids=tok(texts,padding="max_length",max_length=77,return_tensors="pt").input_ids
    eos=(ids==49407).float().argmax(1)
    x=torch.from_numpy(np.array(ex.image)).permute(2,0,1)[None].float()/127.5-1
    with torch.inference_mode():
        z=vae.encode(x).latent_dist.mean*vae.config.scaling_factor
        eps=torch.randn((len(ts),)+z.shape[1:],generator=torch.Generator().manual_seed(0))
        a=ac[ts].view(-1,1,1,1); zt=a.sqrt()*z+(1-a).sqrt()*eps
        enc=te(ids)[0]; T=len(ts); C=len(texts)
        store.clear(); unet(zt.repeat(C,1,1,1), ts.repeat(C), enc.repeat_interleave(T,0))
        sc={k:torch.zeros(C*T) for k in res}
        pos=torch.arange(77)
        for A in store:
            for ci in range(C):
                Ai=A[ci*T:(ci+1)*T]  # T,H,N,77
                content=(pos>=1)&(pos<eos[ci]); nosos=pos>=1
                sc["lse_all"][ci*T:(ci+1)*T]+=torch.logsumexp(Ai,-1).mean((1,2))
                sc["lse_content"][ci*T:(ci+1)*T]+=torch.logsumexp(Ai[...,content],-1).mean((1,2))
                sc["lse_no_sos"][ci*T:(ci+1)*T]+=torch.logsumexp(Ai[...,nosos],-1).mean((1,2))
                sc["max_content"][ci*T:(ci+1)*T]+=Ai[...,content].amax(-1).mean((1,2))
    for k in res: res[k].append(int(sc[k].view(C,T).mean(1).argmax())==true)
print({k:np.mean(v) for k,v in res.items()}, "n=16, colour among 4, chance .25")
