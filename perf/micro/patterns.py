"""Real satellite file-name patterns (as full origin paths) with a matching and non-matching names.

The patterns are the trollsift patterns satpy's readers and pytroll deployments
use for these products; the names look like real files. Each non-matching name
is something that sits in the same directory in real life (another product, a
temporary or sidecar file), so the benchmark measures the reject path a watched
directory actually exercises. ``perf/micro/bench.py`` checks that trollsift
agrees (parse succeeds / validate is False) before timing anything.
"""

from __future__ import annotations

# name: (pattern, matching path, [non-matching paths])
PATTERNS: dict[str, tuple[str, str, list[str]]] = {
    "seviri_hrit": (
        ("/data/hrit/{rate:1s}-000-{hrit_format:_<6s}-{platform_shortname:4s}_{service:_<7s}-{channel:_<6s}_"
         "__-{segment:_<6s}___-{start_time:%Y%m%d%H%M}-{compression:1s}_"),
        "/data/hrit/H-000-MSG4__-MSG4________-IR_108___-000003___-202401011200-C_",
        ["/data/hrit/.H-000-MSG4__-MSG4________-IR_108___-000003___-202401011200-C_.tmp",
         "/data/hrit/H-000-MSG4__-MSG4________-IR_108___-000003___-202401011200-C_.bz2"],
    ),
    "fci_l1c_chunk": (
        ("/data/fci/{pflag}_{location_indicator},{data_designator},MTI{spacecraft_id:1d}+{data_source}-{proc"
         "essing_level}-{type}-{subtype}-{coverage}-{subsetting}-{component1}-BODY-{component3}-{purpose}-{f"
         "ormat}_{oflag}_{originator}_{processing_time:%Y%m%d%H%M%S}_{facility_or_tool}_{environment}_{start"
         "_time:%Y%m%d%H%M%S}_{end_time:%Y%m%d%H%M%S}_{processing_mode}_{special_compression}_{disposition_m"
         "ode}_{repeat_cycle_in_day:>04d}_{count_in_repeat_cycle:>04d}.nc"),
        ("/data/fci/W_XX-EUMETSAT-Darmstadt,IMG+SAT,MTI1+FCI-1C-RRAD-FDHSI-FD--CHK-BODY--DIS-NC4E_C_EUMT_202"
         "40101120520_IDPFI_OPE_20240101120007_20240101120017_N_JLS_C_0072_0001.nc"),
        [("/data/fci/W_XX-EUMETSAT-Darmstadt,IMG+SAT,MTI1+FCI-1C-RRAD-FDHSI-FD--CHK-TRAIL--DIS-NC4E_C_EUMT_2"
          "0240101121000_IDPFI_OPE_20240101120000_20240101121000_N_JLS_C_0072_0000.nc.part"),
         ("/data/fci/W_XX-EUMETSAT-Darmstadt,IMG+SAT,MTI1+LI-2-AF--FD--CHK-BODY---NC4E_C_EUMT_20240101120030"
          "_L2PF_OPE_20240101120000_20240101120030_N__T_0072_0001.nc.tmp")],
    ),
    "aapp_hrpt_l1b": (
        "/data/aapp/hrpt_{platform_name}_{start_time:%Y%m%d_%H%M}_{orbit_number:05d}.l1b",
        "/data/aapp/hrpt_noaa19_20240101_1200_76543.l1b",
        ["/data/aapp/hrpt_noaa19_20240101_1200_76543.l1b.tmp",
         "/data/aapp/mhsl1c_noaa19_20240101_1200_76543.l1c"],
    ),
    "viirs_sdr": (
        ("/data/viirs/SVM{band:2d}_{platform_shortname}_d{start_time:%Y%m%d_t%H%M%S%f}_e{end_time:%H%M%S%f}_"
         "b{orbit:5d}_c{creation_time:%Y%m%d%H%M%S%f}_{source}.h5"),
        "/data/viirs/SVM05_npp_d20240101_t1200123_e1201365_b63000_c20240101122233445566_cspp_dev.h5",
        ["/data/viirs/GMTCO_npp_d20240101_t1200123_e1201365_b63000_c20240101122233445566_cspp_dev.h5",
         "/data/viirs/SVI01_npp_d20240101_t1200123_e1201365_b63000_c20240101122233445566_cspp_dev.h5"],
    ),
    "modis_l1b": (
        "/data/modis/MOD021KM.A{start_time:%Y%j.%H%M}.{collection:03d}.{production_time:%Y%j%H%M%S}.hdf",
        "/data/modis/MOD021KM.A2024001.1200.061.2024001134512.hdf",
        ["/data/modis/MOD03.A2024001.1200.061.2024001134512.hdf",
         "/data/modis/MOD021KM.A2024001.1200.061.2024001134512.hdf.md5"],
    ),
    "olci_efr": (
        ("/data/olci/{mission_id:3s}_OL_1_{datatype_id:_<6s}_{start_time:%Y%m%dT%H%M%S}_{end_time:%Y%m%dT%H%"
         "M%S}_{creation_time:%Y%m%dT%H%M%S}_{duration:4d}_{cycle:3d}_{relative_orbit:3d}_{frame:4s}_{centre"
         ":3s}_{mode:1s}_{timeliness:2s}_{collection:3s}.SEN3.zip"),
        ("/data/olci/S3A_OL_1_EFR____20240101T120000_20240101T120300_20240101T135000_0179_107_123_2340_MAR_O"
         "_NR_003.SEN3.zip"),
        [("/data/olci/S3A_SL_1_RBT____20240101T120000_20240101T120300_20240101T135000_0179_107_123_2340_MAR_"
          "O_NR_004.SEN3.zip"),
         ("/data/olci/S3A_OL_1_EFR____20240101T120000_20240101T120300_20240101T135000_0179_107_123_2340_MAR_"
          "O_NR_003.SEN3.zip.part")],
    ),
    "metop_avhrr_eps": (
        ("/data/eps/AVHR_xxx_1B_{platform_short_name}_{start_time:%Y%m%d%H%M%SZ}_{end_time:%Y%m%d%H%M%SZ}_{p"
         "rocessing_mode}_{disposition_mode}_{creation_time:%Y%m%d%H%M%SZ}"),
        "/data/eps/AVHR_xxx_1B_M01_20240101120003Z_20240101121903Z_N_O_20240101130212Z",
        ["/data/eps/IASI_xxx_1C_M01_20240101120003Z_20240101121903Z_N_O_20240101130212Z",
         "/data/eps/MHSx_xxx_1B_M03_20240101120003Z_20240101121903Z_N_O_20240101130212Z"],
    ),
    "goes_abi_l1b": (
        ("/data/abi/OR_ABI-L1b-RadF-M6C{channel:02d}_{platform_shortname:3s}_s{start_time:%Y%j%H%M%S%f}_e{en"
         "d_time:%Y%j%H%M%S%f}_c{creation_time:%Y%j%H%M%S%f}.nc"),
        "/data/abi/OR_ABI-L1b-RadF-M6C13_G16_s20240011200205_e20240011209513_c20240011209571.nc",
        ["/data/abi/OR_ABI-L1b-RadC-M6C13_G16_s20240011201174_e20240011203547_c20240011203594.nc",
         "/data/abi/OR_GLM-L2-LCFA_G16_s20240011200000_e20240011200200_c20240011200216.nc"],
    ),
    "himawari_hsd": (
        ("/data/ahi/HS_{platform_shortname}_{start_time:%Y%m%d_%H%M}_B{band:2d}_{area}_R{res_id:d}{sub_res_i"
         "d:d}_S{segment:2d}{total_segments:2d}.DAT.bz2"),
        "/data/ahi/HS_H09_20240101_1200_B13_FLDK_R20_S0110.DAT.bz2",
        ["/data/ahi/HS_H09_20240101_1200_B13_FLDK_R20_S0110.DAT",
         "/data/ahi/HS_H09_20240101_1200_B13_FLDK_R20_S0110.DAT.bz2.tmp"],
    ),
}
