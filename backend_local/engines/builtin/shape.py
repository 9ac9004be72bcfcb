"""Baseline union-of-medial-balls shape (placeholder until the shape research lands in this file)."""
import numpy as np, torch
from dataclasses import dataclass
from scipy import ndimage
from skimage import measure
@dataclass
class ShapeField:
    h2: torch.Tensor  # HxW
    size: int
def reconstruct_field(rgba, device, seed=0):
    mask = rgba[...,3]>127
    dist = ndimage.distance_transform_edt(mask)
    f = torch.where(torch.from_numpy(mask), -torch.from_numpy(dist)**2, torch.tensor(1e9, dtype=torch.float64)).float()
    n=f.shape[0]; idx=torch.arange(n,dtype=torch.float32); d2=(idx[:,None]-idx[None,:])**2
    g=torch.cat([(d2[:,:,None]+f[None,:,c:c+64]).amin(1) for c in range(0,n,64)],1)
    g=torch.cat([(d2[:,:,None]+g.T[None,:,c:c+64]).amin(1) for c in range(0,n,64)],1).T
    return ShapeField((-g).clamp(min=0), n)
def extract_mesh(field, resolution):
    h2=field.h2.numpy(); n=field.size
    step = n/resolution
    ys=np.arange(0,n,step); 
    hs = ndimage.map_coordinates(h2, np.meshgrid(ys,ys,indexing='ij'), order=1)
    hmax=np.sqrt(hs.max()); zs=np.arange(-hmax-2*step, hmax+2*step, step)
    F = np.sqrt(zs[None,None,:]**2 + 1e-9) - np.sqrt(hs)[:,:,None]
    F = np.where((hs>0)[:,:,None], F, np.maximum(F, step))
    v,f,_,_ = measure.marching_cubes(np.pad(F,1,constant_values=10).astype(np.float32),0.0)
    v=v-1
    x = v[:,1]*step - n/2; y = n/2 - v[:,0]*step; z = zs[0]+v[:,2]*step
    return np.stack([x,y,z],1), f[:,::-1].astype(np.int64)
def field_normals(field, pts):
    h2=field.h2; n=field.size
    gy, gx = torch.gradient(h2)
    col = pts[:,0]+n/2; row = n/2-pts[:,1]
    grid=torch.stack([col/n*2-1,row/n*2-1],1).view(1,1,-1,2).float()
    s=lambda t: torch.nn.functional.grid_sample(t[None,None].float(),grid,align_corners=False).view(-1)
    # F = z^2 - h2(x,y): grad = (-dh2/dx, +dh2/drow... , 2z)
    nx=-s(gx); ny= s(gy); nz=2*pts[:,2]
    return torch.nn.functional.normalize(torch.stack([nx,ny,nz],1),dim=1)
