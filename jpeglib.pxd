# Declarations of the parts of libjpeg-turbo's jpeglib.h that the binding (_decoder.pyx,
# jdct_c.pxd) uses directly. Only the fields read or written from Cython are listed; Cython does
# not need the full structs because the real definitions come from the header at C compile time.

cdef extern from "stdio.h":
    pass

cdef extern from "jpeglib.h" nogil:
    ctypedef unsigned int JDIMENSION
    ctypedef short JCOEF
    ctypedef unsigned char JSAMPLE
    ctypedef unsigned short UINT16
    ctypedef int boolean

    ctypedef enum J_COLOR_SPACE:
        JCS_UNKNOWN
        JCS_GRAYSCALE
        JCS_RGB
        JCS_YCbCr
        JCS_CMYK
        JCS_YCCK

    ctypedef enum J_DCT_METHOD:
        JDCT_ISLOW
        JDCT_IFAST
        JDCT_FLOAT

    ctypedef struct JQUANT_TBL:
        UINT16 quantval[64]

    ctypedef struct jpeg_component_info:
        int component_id
        int component_index
        int h_samp_factor
        int v_samp_factor
        int quant_tbl_no
        JDIMENSION width_in_blocks
        JDIMENSION height_in_blocks
        JQUANT_TBL *quant_table

    cdef struct jpeg_marker_struct:
        jpeg_marker_struct *next
        unsigned char marker
        unsigned int original_length
        unsigned int data_length
        unsigned char *data
    ctypedef jpeg_marker_struct *jpeg_saved_marker_ptr

    cdef struct jpeg_decompress_struct:
        JDIMENSION image_width
        JDIMENSION image_height
        int num_components
        J_COLOR_SPACE jpeg_color_space
        J_COLOR_SPACE out_color_space
        unsigned int scale_num
        unsigned int scale_denom
        J_DCT_METHOD dct_method
        boolean do_fancy_upsampling
        JDIMENSION output_width
        JDIMENSION output_height
        int out_color_components
        int output_components
        JDIMENSION output_scanline
        int input_scan_number
        int data_precision
        jpeg_component_info *comp_info
        boolean progressive_mode
        boolean arith_code
        unsigned int restart_interval
        boolean saw_JFIF_marker
        boolean saw_Adobe_marker
        unsigned char Adobe_transform
        int max_h_samp_factor
        int max_v_samp_factor
        jpeg_saved_marker_ptr marker_list
        JQUANT_TBL *quant_tbl_ptrs[4]

    int JPEG_APP0
